# Sourced by device-check.sh and relay-check.sh on a lent GPU machine (../shared/gpu/README.md), from the project
# root: prints the machine, makes libcuda.so loadable for ILGPU, and unpacks .gpu-bundle/bundle.tar.xz into $b, with
# "${meganet[@]}" the command that runs the bundled meganet. Needs step() from the caller.
step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv 2>&1
grep -m1 "model name" /proc/cpuinfo; nproc

# ILGPU loads the driver by its unversioned name (libcuda.so); a driver mounted into a container may carry only
# libcuda.so.1, so point a private folder's libcuda.so at it rather than touch the read-only driver folder.
if command -v nvidia-smi > /dev/null && ! ldconfig -p | grep -q 'libcuda\.so '; then
  one=$(ldconfig -p | awk '/libcuda\.so\.1 / { print $NF; exit }')
  [ -n "$one" ] || one=$(ls /usr/local/nvidia/lib64/libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so.1 2>/dev/null | head -1)
  if [ -n "$one" ]; then
    mkdir -p /tmp/cudalib && ln -sf "$one" /tmp/cudalib/libcuda.so
    export LD_LIBRARY_PATH=/tmp/cudalib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "libcuda.so -> $one (through /tmp/cudalib)"
  else
    echo "no libcuda.so.1 found"; ldconfig -p | grep -i cuda | head -5
  fi
fi

step "unpack"
b=/tmp/b
mkdir -p $b && tar -xJf .gpu-bundle/bundle.tar.xz -C $b || exit 1
export DOTNET_ROOT=$b/dotnet
meganet=("$b/dotnet/dotnet" "$b/app/meganet.dll")
