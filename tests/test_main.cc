// Shared main of the GoogleTest binaries: initialises MPI (a no-op world of 1 without mpirun), runs the tests,
// and makes every rank agree on the outcome so that a failure on one rank fails the whole mpirun.
#include <gtest/gtest.h>

#include "comm/comm.h"

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  tempered::comm::Init(&argc, &argv);
  // Only rank 0 prints the test report; the others still run every test.
  if (tempered::comm::Rank() != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS();
  failed = tempered::comm::AllReduceMax(static_cast<double>(failed)) > 0 ? 1 : 0;
  tempered::comm::Finalize();
  return failed;
}
