// Shared main of the GoogleTest binaries: initialises MPI (a no-op world of 1 without mpirun), runs the tests,
// and makes every rank agree on the outcome so that a failure on one rank fails the whole mpirun.
//
// Rank 0 prints the usual report. The other ranks run every test too but print only their failures, prefixed with
// their rank: a rank-specific bug (uneven rows, a non-zero root) shows where it happened.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "comm/comm.h"

namespace {

class FailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}

  // The test's name is kept from OnTestStart: asking the UnitTest for it here would take gtest's mutex, which is
  // already held while a result is reported (a deadlock, then a hang of the whole mpirun).
  void OnTestStart(const testing::TestInfo& test) override {
    test_ = std::string(test.test_suite_name()) + "." + test.name();
  }

  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s failed at %s:%d\n%s\n", rank_, test_.c_str(),
                 result.file_name() ? result.file_name() : "?", result.line_number(), result.message());
    std::fflush(stderr);
  }

 private:
  int rank_;
  std::string test_;
};

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  tempered::comm::Init(&argc, &argv);
  const int rank = tempered::comm::Rank();
  if (rank != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(rank));
  }
  const int failed_here = RUN_ALL_TESTS();
  const bool failed_anywhere = tempered::comm::AllReduceMax(static_cast<double>(failed_here)) > 0;
  if (rank == 0 && failed_anywhere && failed_here == 0) {
    std::fprintf(stderr, "[rank 0] all tests passed here, but another rank failed (see its [rank N] lines)\n");
  }
  tempered::comm::Finalize();
  return failed_anywhere ? 1 : 0;
}
