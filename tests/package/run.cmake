# Installs a ferry build into a temporary prefix, then configures, builds and runs this folder's project
# against it, the way a user's project would use an installed ferry. Removes its temporary files either way.
#
#   cmake -DFERRY_BINARY_DIR=<ferry build> -DPACKAGE_SOURCE_DIR=<this folder> -DWORK_DIR=<scratch parent>
#         [-DCONFIG=<build type>] [-DGENERATOR=<cmake generator>] [-DMAKE_PROGRAM=<path>]
#         [-DCXX_COMPILER=<path>] [-DSANITIZE=<list>] -P run.cmake
cmake_minimum_required(VERSION 3.22)

foreach(var FERRY_BINARY_DIR PACKAGE_SOURCE_DIR WORK_DIR)
  if(NOT ${var})
    message(FATAL_ERROR "run.cmake: pass -D${var}=...")
  endif()
endforeach()

string(RANDOM LENGTH 8 suffix)
set(scratch "${WORK_DIR}/package-test-${suffix}")
set(prefix "${scratch}/prefix")
set(build "${scratch}/build")
file(REMOVE_RECURSE "${scratch}")
file(MAKE_DIRECTORY "${scratch}")

# Runs one step; on failure removes the scratch directory and fails with the step's output.
function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    file(REMOVE_RECURSE "${scratch}")
    message(FATAL_ERROR "package test: ${what} failed (${rc}):\n${out}")
  endif()
  message(STATUS "package test: ${what}: ok")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

set(config_args "")
if(CONFIG)
  set(config_args --config "${CONFIG}")
endif()
step("cmake --install into ${prefix}" "${CMAKE_COMMAND}" --install "${FERRY_BINARY_DIR}" --prefix "${prefix}"
  ${config_args})

set(configure_args -S "${PACKAGE_SOURCE_DIR}" -B "${build}" "-DCMAKE_PREFIX_PATH=${prefix}"
  # Only the installed tree may satisfy find_package(ferry): no package registry (checked below).
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(GENERATOR)
  list(APPEND configure_args -G "${GENERATOR}")
endif()
if(MAKE_PROGRAM)
  list(APPEND configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(CXX_COMPILER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
if(CONFIG)
  list(APPEND configure_args "-DCMAKE_BUILD_TYPE=${CONFIG}")
endif()
if(SANITIZE)
  # A sanitized static libferry needs the sanitizer runtime in whatever links it.
  list(APPEND configure_args "-DCMAKE_CXX_FLAGS=-fsanitize=${SANITIZE}"
    "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=${SANITIZE}")
endif()
unset(ENV{ferry_DIR})
step("configure tests/package against the installed ferry" "${CMAKE_COMMAND}" ${configure_args})

# find_package must have found the installed copy, not the build tree or a system one.
file(STRINGS "${build}/CMakeCache.txt" found_dir REGEX "^ferry_DIR:")
string(REGEX REPLACE "^ferry_DIR:[A-Z]+=" "" found_dir "${found_dir}")
cmake_path(IS_PREFIX prefix "${found_dir}" NORMALIZE from_prefix)
if(NOT from_prefix)
  file(REMOVE_RECURSE "${scratch}")
  message(FATAL_ERROR "package test: ferry was found in ${found_dir}, not in ${prefix}")
endif()

step("build tests/package" "${CMAKE_COMMAND}" --build "${build}" ${config_args})
step("run package_test" "${build}/package_test")
message(STATUS "package test: ${step_output}")

file(REMOVE_RECURSE "${scratch}")
