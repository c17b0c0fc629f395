#!/usr/bin/env bash
# Builds libzmq from its sources with the draft API on (and, optionally, a smaller pipe
# chunk), for bench/memory.sh's "what would remove it" runs (bench/RESULTS.md, "Memory per
# connection (issue 14)"). No cmake or autotools needed: a hand-written platform.hpp for
# Linux/x86-64 with epoll and libsodium (CURVE), every src/*.cpp but WebSocket.
#
#   bench/memory-libzmq.sh LIBZMQ_SRC OUT_DIR [PIPE_GRANULARITY]
#   git clone -b v4.3.4 https://github.com/zeromq/libzmq /tmp/libzmq
#   bench/memory-libzmq.sh /tmp/libzmq /tmp/zbuild          # drafts on, stock 256-message chunks
#   bench/memory-libzmq.sh /tmp/libzmq /tmp/zbuild16 16     # and 16-message chunks (1 KiB)
#   SERVER_ENV=LD_LIBRARY_PATH=/tmp/zbuild bench/memory.sh load 1000
#
# Needs g++ and libsodium-dev. Takes ~5 min on two cores. Not for production: it is the
# same ABI (libzmq.so.5), but built here without libzmq's own build checks.
set -euo pipefail
SRC=${1:?usage: memory-libzmq.sh LIBZMQ_SRC OUT_DIR [PIPE_GRANULARITY]}
OUT=${2:?usage: memory-libzmq.sh LIBZMQ_SRC OUT_DIR [PIPE_GRANULARITY]}
GRANULARITY=${3:-}
mkdir -p "$OUT"
cp -a "$SRC/src" "$SRC/include" "$OUT/"
cd "$OUT"
ON="ZMQ_USE_CV_IMPL_STL11 ZMQ_IOTHREAD_POLLER_USE_EPOLL ZMQ_IOTHREAD_POLLER_USE_EPOLL_CLOEXEC
ZMQ_POLL_BASED_ON_POLL ZMQ_CACHELINE_SIZE HAVE_FORK HAVE_CLOCK_GETTIME HAVE_MKDTEMP ZMQ_HAVE_UIO
ZMQ_HAVE_NOEXCEPT ZMQ_HAVE_EVENTFD ZMQ_HAVE_EVENTFD_CLOEXEC ZMQ_HAVE_IFADDRS
ZMQ_HAVE_SO_BINDTODEVICE ZMQ_HAVE_SO_PEERCRED ZMQ_HAVE_O_CLOEXEC ZMQ_HAVE_SOCK_CLOEXEC
ZMQ_HAVE_SO_KEEPALIVE ZMQ_HAVE_SO_PRIORITY ZMQ_HAVE_TCP_KEEPCNT ZMQ_HAVE_TCP_KEEPIDLE
ZMQ_HAVE_TCP_KEEPINTVL ZMQ_HAVE_PTHREAD_SETNAME_2 ZMQ_HAVE_PTHREAD_SET_AFFINITY HAVE_ACCEPT4
HAVE_STRNLEN ZMQ_HAVE_IPC ZMQ_BUILD_DRAFT_API ZMQ_HAVE_CURVE ZMQ_USE_LIBSODIUM HAVE_IF_NAMETOINDEX"
cp "$SRC/builds/cmake/platform.hpp.in" src/platform.hpp
for d in $ON; do sed -i "s/^#cmakedefine $d\b/#define $d/" src/platform.hpp; done
sed -i 's/@ZMQ_CACHELINE_SIZE@/64/; s/^#cmakedefine .*$//' src/platform.hpp
if [ -n "$GRANULARITY" ]; then
  sed -i "s/message_pipe_granularity = 256,/message_pipe_granularity = $GRANULARITY,/" src/config.hpp
  grep -q "message_pipe_granularity = $GRANULARITY," src/config.hpp
fi
cat > Makefile << 'MK'
SRCS := $(filter-out src/ws_%.cpp src/wss_%.cpp,$(wildcard src/*.cpp))
OBJS := $(patsubst src/%.cpp,obj/%.o,$(SRCS))
CXXFLAGS := -O2 -fPIC -fvisibility=hidden -DZMQ_BUILD_DRAFT_API -DDLL_EXPORT -D_REENTRANT \
  -D_THREAD_SAFE -Iinclude -Isrc -std=gnu++11
obj/%.o: src/%.cpp
	@mkdir -p obj
	$(CXX) $(CXXFLAGS) -c $< -o $@
libzmq.so.5: $(OBJS)
	$(CXX) -shared -Wl,-soname,libzmq.so.5 -o $@ $(OBJS) -lsodium -lpthread -lrt
MK
make -j"$(nproc)" > build.log 2>&1 || { tail -20 build.log; exit 1; }
echo "$OUT/libzmq.so.5"
