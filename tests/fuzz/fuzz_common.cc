// Linked into every fuzz target: one intra-op thread, so that LibTorch starts no thread pool per input and a
// report's stack is the parser's own.
#include <ATen/Parallel.h>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  return 0;
}
