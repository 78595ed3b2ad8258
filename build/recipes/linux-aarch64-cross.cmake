# CMake toolchain for compiling Linux aarch64 libraries on an x86-64 Debian machine with Debian's cross
# compilers (gcc-aarch64-linux-gnu, g++-aarch64-linux-gnu: build/system-deps.sh), used by
# build/cross-aarch64.sh (llama-cpp-python) and, through build/arm64-runtime.sh, build/chat-shim.sh.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# Headers and libraries from the cross toolchain's sysroot only; programs (cmake's helpers) from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
