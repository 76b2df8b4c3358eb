// TensorBoard event files: crc32c and its masking against published values, a write/read round trip, corruption
// and write errors. event_reader_test.py reads the file of SampleForPythonReader with an independent reader.
#include "trainer/io/event_writer.h"

#include <glog/logging.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "common/errors.h"

namespace tempered {
namespace {

std::string MakeTempDir() {
  std::string pattern = testing::TempDir() + "event_writer_test.XXXXXX";
  CHECK(mkdtemp(pattern.data()) != nullptr) << pattern;
  return pattern;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// The events event_reader_test.py expects, value for value: keep the two in step.
void WriteSample(EventWriter& writer) {
  writer.AddScalar("train/loss", 1, 4.5);
  writer.AddScalar("train/loss", 2, 4.25);
  writer.AddScalar("train/lr", 2, 0.1);
  writer.Flush();
  AddHistogram(writer, "similarity/positive", 2, torch::tensor({-1.0, -0.5, 0.0, 0.5, 1.0, 1.0}));
  writer.AddScalar("eval/knn_top1", 3, 71.25);
  writer.Flush();
}

TEST(Crc32cTest, CheckValueAndKnownVectors) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xe3069283u);  // the CRC catalogue's check value of CRC-32C
  EXPECT_EQ(Crc32c("", 0), 0u);
  const std::string zeros(32, '\0');  // RFC 3720 (iSCSI) B.4: 32 bytes of zeros
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size()), 0x8a9136aau);
}

TEST(Crc32cTest, Masking) {
  EXPECT_EQ(MaskCrc(0), 0xa282ead8u);
  EXPECT_EQ(MaskCrc(0x00008000u), 0xa282ead9u);  // bit 15 rotates to bit 0
  EXPECT_EQ(MaskCrc(0x00000001u), 0xa284ead8u);  // bit 0 rotates to bit 17
  // Every TensorFlow event file starts with the 24-byte file_version record: length 24, then this masked CRC.
  const std::string length_24("\x18\0\0\0\0\0\0\0", 8);
  EXPECT_EQ(MaskCrc(Crc32c(length_24.data(), 8)), 0x224b7fa3u);  // bytes a3 7f 4b 22
}

// A resumed run may start within the second its last attempt stopped in: the default name must not reuse (and
// truncate) that attempt's file. Files for this second and the next three exist already; the writer takes a later
// name and leaves them as they were.
TEST(EventWriterTest, NeverOverwritesAnEarlierFile) {
  const std::string dir = MakeTempDir();
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  const int64_t now = std::time(nullptr);
  std::vector<std::string> earlier;
  for (int64_t s = now; s < now + 4; ++s) {
    earlier.push_back(dir + "/events.out.tfevents." + std::to_string(s) + "." + host);
    std::ofstream(earlier.back()) << "an earlier run's events";
  }
  std::string path;
  {
    EventWriter writer(dir);
    path = writer.path();
    WriteSample(writer);
  }
  for (const std::string& file : earlier) {
    EXPECT_NE(path, file);
    std::ifstream in(file);
    const std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(content, "an earlier run's events") << file;
  }
  EXPECT_EQ(ReadEventFile(path).size(), 6u);
}

TEST(EventWriterTest, RoundTrip) {
  const std::string dir = MakeTempDir() + "/run";  // created by the writer
  std::string path;
  {
    EventWriter writer(dir);
    path = writer.path();
    WriteSample(writer);
  }
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  const std::string name = std::filesystem::path(path).filename();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  EXPECT_EQ(name.substr(name.size() - std::string(host).size() - 1), "." + std::string(host)) << name;

  const std::vector<tensorboard::Event> events = ReadEventFile(path);
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events[0].file_version(), "brain.Event:2");
  EXPECT_NEAR(events[0].wall_time(), static_cast<double>(std::time(nullptr)), 60);
  const auto& loss = events[2].summary().value(0);
  EXPECT_EQ(events[2].step(), 2);
  EXPECT_EQ(loss.tag(), "train/loss");
  EXPECT_EQ(loss.simple_value(), 4.25f);
  EXPECT_EQ(events[3].summary().value(0).simple_value(), 0.1f);

  const tensorboard::HistogramProto& h = events[4].summary().value(0).histo();
  EXPECT_EQ(events[4].summary().value(0).tag(), "similarity/positive");
  EXPECT_EQ(h.min(), -1);
  EXPECT_EQ(h.max(), 1);
  EXPECT_EQ(h.num(), 6);
  EXPECT_EQ(h.sum(), 1);
  EXPECT_EQ(h.sum_squares(), 3.5);
  ASSERT_EQ(h.bucket_size(), kHistogramBuckets);
  ASSERT_EQ(h.bucket_limit_size(), kHistogramBuckets);
  EXPECT_EQ(h.bucket_limit(kHistogramBuckets - 1), 1);
  // Buckets of width 2/30: -1 in the first, -0.5 in [-0.533, -0.467), 0 in [0, 0.067), 0.5 in the 23rd, 1 in the last.
  std::vector<double> expected(kHistogramBuckets, 0);
  expected[0] = expected[7] = expected[15] = expected[22] = 1;
  expected[29] = 2;
  EXPECT_EQ(std::vector<double>(h.bucket().begin(), h.bucket().end()), expected);
  EXPECT_EQ(events[5].summary().value(0).simple_value(), 71.25f);
}

TEST(EventWriterTest, ConstantAndEmptyHistograms) {
  const std::string dir = MakeTempDir();
  EventWriter writer(dir, "events.out.tfevents.0.test");
  AddHistogram(writer, "constant", 1, torch::full({2, 3}, 0.25, torch::kFloat));
  AddHistogram(writer, "empty", 1, torch::empty({0}));
  AddHistogram(writer, "non-finite dropped", 1, torch::tensor({std::nan(""), 2.0}));
  writer.Flush();
  const std::vector<tensorboard::Event> events = ReadEventFile(writer.path());
  ASSERT_EQ(events.size(), 3u);  // the file_version record, constant, non-finite dropped
  const tensorboard::HistogramProto& constant = events[1].summary().value(0).histo();
  EXPECT_EQ(constant.num(), 6);
  ASSERT_EQ(constant.bucket_size(), 1);
  EXPECT_EQ(constant.bucket(0), 6);
  EXPECT_EQ(constant.bucket_limit(0), 0.25);
  EXPECT_EQ(events[2].summary().value(0).histo().num(), 1);
}

TEST(EventWriterTest, ReaderRejectsCorruptAndTruncatedFiles) {
  const std::string dir = MakeTempDir();
  std::string path;
  {
    EventWriter writer(dir);
    path = writer.path();
    WriteSample(writer);
  }
  const std::string good = ReadBytes(path);
  std::string bad = good;
  bad[bad.size() - 10] ^= 1;  // inside the last record's payload
  WriteBytes(path, bad);
  EXPECT_THROW(
      {
        try {
          ReadEventFile(path);
        } catch (const UserError& e) {
          EXPECT_NE(std::string(e.what()).find("bad payload CRC"), std::string::npos) << e.what();
          throw;
        }
      },
      UserError);
  bad = good;
  bad[0] ^= 1;  // the first record's length
  WriteBytes(path, bad);
  EXPECT_THROW(ReadEventFile(path), UserError);
  WriteBytes(path, good.substr(0, good.size() - 1));
  EXPECT_THROW(ReadEventFile(path), UserError);
  WriteBytes(path, good);
  EXPECT_EQ(ReadEventFile(path).size(), 6u);
}

TEST(EventWriterTest, WriteFailureNamesTheFile) {
  // /dev/full fails every write with ENOSPC, as a full disk does.
  try {
    EventWriter writer("/dev", "full");
    FAIL() << "writing to /dev/full did not throw";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("/dev/full"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No space left"), std::string::npos) << e.what();
  }
  // A directory that cannot be created (its parent is a file).
  EXPECT_THROW(EventWriter("/dev/null/run"), UserError);
}

TEST(EventWriterTest, SimilarityHistograms) {
  // Candidates (1,0), (0,1), (0.6,0.8), (-1,0); the anchors are the first two, both with positive 2.
  const torch::Tensor candidates = torch::tensor({1.0, 0.0, 0.0, 1.0, 0.6, 0.8, -1.0, 0.0}).view({4, 2});
  const torch::Tensor anchors = candidates.slice(0, 0, 2);
  const torch::Tensor positive = torch::tensor({2, 2}, torch::kLong);
  const std::string dir = MakeTempDir();
  EventWriter writer(dir, "events.out.tfevents.0.test");
  AddSimilarityHistograms(writer, 5, anchors, candidates, positive, torch::tensor({0, 1}, torch::kLong));
  AddSimilarityHistograms(writer, 6, anchors, candidates, positive, torch::tensor({-1, -1}, torch::kLong));
  writer.Flush();
  const std::vector<tensorboard::Event> events = ReadEventFile(writer.path());
  ASSERT_EQ(events.size(), 5u);
  const auto histogram = [&](size_t i, const std::string& tag) {
    EXPECT_EQ(events[i].summary().value(0).tag(), tag);
    return events[i].summary().value(0).histo();
  };
  const tensorboard::HistogramProto positives = histogram(1, "similarity/positive");
  EXPECT_EQ(events[1].step(), 5);
  EXPECT_EQ(positives.num(), 2);
  EXPECT_NEAR(positives.sum(), 0.6 + 0.8, 1e-6);
  // Anchor 0 against (0,1) and (-1,0); anchor 1 against (1,0) and (-1,0): itself and its positive are left out.
  const tensorboard::HistogramProto negatives = histogram(2, "similarity/negative");
  EXPECT_EQ(negatives.num(), 4);
  EXPECT_EQ(negatives.sum(), -1);
  EXPECT_EQ(negatives.min(), -1);
  EXPECT_EQ(negatives.max(), 0);
  // Nothing excluded (memory-bank negatives): each anchor's own row counts as a negative, similarity 1.
  const tensorboard::HistogramProto bank_negatives = histogram(4, "similarity/negative");
  EXPECT_EQ(bank_negatives.num(), 6);
  EXPECT_EQ(bank_negatives.sum(), 1);
}

// A memory bank larger than kHistogramColumns: the negatives are every stride-th candidate's (2 * 4096 + 1 candidates:
// stride 3, columns 0, 3, ..., 8190: 2731 of them), the positives every row's own, wherever it lies.
TEST(EventWriterTest, SimilarityHistogramsOfALargeBankAreABoundedSample) {
  torch::manual_seed(3);
  const int64_t m = 2 * kHistogramColumns + 1, n = 4;
  const auto unit = [](torch::Tensor x) {
    return torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1));
  };
  const torch::Tensor candidates = unit(torch::randn({m, 8})), anchors = unit(torch::randn({n, 8}));
  const torch::Tensor positive = torch::tensor({1, 3, 6, 8000}, torch::kLong);  // 3 and 6 are sampled columns
  const std::string dir = MakeTempDir();
  EventWriter writer(dir, "events.out.tfevents.0.test");
  AddSimilarityHistograms(writer, 1, anchors, candidates, positive, torch::full({n}, -1, torch::kLong));
  writer.Flush();
  const std::vector<tensorboard::Event> events = ReadEventFile(writer.path());
  ASSERT_EQ(events.size(), 3u);
  const tensorboard::HistogramProto positives = events[1].summary().value(0).histo();
  const tensorboard::HistogramProto negatives = events[2].summary().value(0).histo();
  const torch::Tensor full = anchors.to(torch::kDouble).mm(candidates.to(torch::kDouble).t());  // (n, m)
  EXPECT_NEAR(positives.sum(), full.gather(1, positive.unsqueeze(1)).sum().item<double>(), 1e-5);
  const int64_t sampled = (m + 2) / 3;
  EXPECT_EQ(negatives.num(), n * sampled - 2);  // rows 1 and 2 have their positive among the sampled columns
  const torch::Tensor columns = full.index_select(1, torch::arange(0, m, 3, torch::kLong));
  const double expected = columns.sum().item<double>() - full[1][3].item<double>() - full[2][6].item<double>();
  EXPECT_NEAR(negatives.sum(), expected, 1e-3);
}

TEST(EventWriterTest, Metrics) {
  Metrics metrics;
  metrics.set_knn_top1(80.5);
  metrics.set_linear_top1(82.25);
  metrics.set_uniformity(3.5);
  metrics.set_alignment(0.75);
  metrics.set_tolerance(0.5);
  metrics.set_penalty_entropy(4.0);
  EvalConfig eval;
  const std::string dir = MakeTempDir();
  EventWriter writer(dir, "events.out.tfevents.0.test");
  AddMetrics(writer, 7, metrics, eval);  // linear_epochs 0: no linear evaluation ran
  eval.set_linear_epochs(10);
  AddMetrics(writer, 8, metrics, eval);
  writer.Flush();
  std::map<std::pair<int64_t, std::string>, float> scalars;
  for (const tensorboard::Event& e : ReadEventFile(writer.path())) {
    for (const auto& v : e.summary().value()) scalars[{e.step(), v.tag()}] = v.simple_value();
  }
  EXPECT_EQ(scalars.size(), 11u);
  EXPECT_EQ(scalars.count({7, "eval/linear_top1"}), 0u);
  EXPECT_EQ(scalars.at({8, "eval/linear_top1"}), 82.25f);
  EXPECT_EQ(scalars.at({7, "eval/knn_top1"}), 80.5f);
  EXPECT_EQ(scalars.at({7, "eval/uniformity"}), 3.5f);
  EXPECT_EQ(scalars.at({7, "eval/alignment"}), 0.75f);
  EXPECT_EQ(scalars.at({7, "eval/tolerance"}), 0.5f);
  EXPECT_EQ(scalars.at({8, "eval/penalty_entropy"}), 4.0f);
}

// Writes WriteSample's events to $TEMPERED_EVENT_SAMPLE_DIR for event_reader_test.py (skipped when unset).
TEST(EventWriterTest, SampleForPythonReader) {
  const char* dir = std::getenv("TEMPERED_EVENT_SAMPLE_DIR");
  if (dir == nullptr) GTEST_SKIP() << "TEMPERED_EVENT_SAMPLE_DIR is not set (event_reader_test.py sets it)";
  EventWriter writer(dir);
  WriteSample(writer);
}

}  // namespace
}  // namespace tempered
