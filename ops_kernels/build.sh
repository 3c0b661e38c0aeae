#!/usr/bin/env bash
# Build the ascend_attn AscendC custom-op project (ops_kernels/).
#
#   ./build.sh                 CANN custom-op package -> build_out/custom_opp_<os>_<arch>.run
#                              (needs the CANN toolkit: `source <cann>/set_env.sh`)
#   ./build.sh --host-sim      host simulation -> build_host_sim/host_sim/libascend_attn_host_sim.so
#                              (system C++ compiler, no CANN)
# Options: -j N | --jobs N, --build-dir DIR, --soc SOC (CANN, default ascend910b), --clean, -h | --help
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mode=cann
jobs="$(nproc 2>/dev/null || echo 4)"
build_dir=""
soc=ascend910b
clean=0

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "build.sh: error: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --host-sim) mode=host-sim ;;
    --cann) mode=cann ;;
    -j) jobs="${2:?-j needs a number}"; shift ;;
    -j*) jobs="${1#-j}" ;;
    --jobs) jobs="${2:?--jobs needs a number}"; shift ;;
    --jobs=*) jobs="${1#*=}" ;;
    --build-dir) build_dir="${2:?--build-dir needs a path}"; shift ;;
    --build-dir=*) build_dir="${1#*=}" ;;
    --soc) soc="${2:?--soc needs a value}"; shift ;;
    --soc=*) soc="${1#*=}" ;;
    --clean) clean=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
  shift
done

command -v cmake >/dev/null 2>&1 || die "cmake not found (need >= 3.16; install it, e.g. 'pip install cmake' or your package manager)"

if [[ "$mode" == host-sim ]]; then
  build_dir="${build_dir:-$here/build_host_sim}"
  if ! command -v "${CXX:-c++}" >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
    die "no C++ compiler found (set CXX or install g++ >= 12: the simulation uses _Float16 for half)"
  fi
  [[ $clean -eq 1 ]] && rm -rf "$build_dir"
  cmake -S "$here" -B "$build_dir" -DASCEND_ATTN_HOST_SIM=ON -DCMAKE_BUILD_TYPE=Release
  cmake --build "$build_dir" -j "$jobs"
  echo "build.sh: host simulation library: $build_dir/host_sim/libascend_attn_host_sim.so"
  exit 0
fi

# ---- CANN package ------------------------------------------------------------------------------------
build_dir="${build_dir:-$here/build_out}"
if [[ -z "${ASCEND_HOME_PATH:-}" ]]; then
  die "ASCEND_HOME_PATH is not set: the CANN toolkit is missing or its environment is not loaded.
  Install CANN and run 'source <install>/ascend-toolkit/set_env.sh' (or <install>/cann/set_env.sh),
  or build the host simulation instead: ./build.sh --host-sim"
fi
[[ -d "$ASCEND_HOME_PATH" ]] || die "ASCEND_HOME_PATH=$ASCEND_HOME_PATH does not exist"
asc_cmake=""
for d in "$ASCEND_HOME_PATH/compiler/tikcpp/ascendc_kernel_cmake" "$ASCEND_HOME_PATH/tools/tikcpp/ascendc_kernel_cmake"; do
  [[ -d "$d" ]] && asc_cmake="$d" && break
done
[[ -n "$asc_cmake" ]] || die "CANN's AscendC CMake modules (ascendc_kernel_cmake) are missing under $ASCEND_HOME_PATH
  (compiler/tikcpp or tools/tikcpp): the toolkit is incomplete or too old for npu_op_package()"
command -v python3 >/dev/null 2>&1 || die "python3 not found (CANN's op build scripts need it)"

[[ $clean -eq 1 ]] && rm -rf "$build_dir"
cmake -S "$here" -B "$build_dir" \
  -DCMAKE_BUILD_TYPE=Release \
  -DASCEND_CANN_PACKAGE_PATH="$ASCEND_HOME_PATH" \
  -DASCEND_COMPUTE_UNIT="$soc" \
  -Dvendor_name=ascend_attn \
  -DASCEND_PYTHON_EXECUTABLE="$(command -v python3)"
cmake --build "$build_dir" --target binary package -j "$jobs"
run_pkg="$(ls "$build_dir"/custom_opp_*.run 2>/dev/null | head -n1 || true)"
[[ -n "$run_pkg" ]] || die "the build finished but no custom_opp_*.run was produced in $build_dir"
echo "build.sh: package $run_pkg"
echo "build.sh: install with: $run_pkg [--install-path=<dir>]  (vendor: ascend_attn)"
