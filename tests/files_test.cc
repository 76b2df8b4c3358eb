// common/files.h: atomic writes, directories and the locks that keep a second writer off a run directory; and
// common/utf8.h: file names that are not UTF-8, as messages show them.
#include "common/files.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "common/errors.h"
#include "common/utf8.h"

namespace tempered {
namespace {

class FilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/tempered-files-test.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(FilesTest, AtomicWriteReplacesTheFileAndLeavesNoTempFile) {
  const std::string path = dir_ + "/result.json";
  WriteFileAtomically(path, "first");
  WriteFileAtomically(path, std::string("second"), Sync::kFast);
  EXPECT_EQ(ReadWholeFile(path, "result"), "second");
  const std::string staged = StageFile(path, "third");
  DiscardStagedFile(staged);
  EXPECT_EQ(ReadWholeFile(path, "result"), "second");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), std::filesystem::directory_iterator()), 1);
}

TEST_F(FilesTest, AFailedProducerLeavesTheOldFile) {
  const std::string path = dir_ + "/checkpoint.pt";
  WriteFileAtomically(path, "old");
  const FileProducer failing = [](const FileWriter& write) {
    write("new", 3);
    throw std::runtime_error("the archive writer failed");
  };
  EXPECT_THROW(WriteFileAtomically(path, failing), UserError);
  EXPECT_EQ(ReadWholeFile(path, "checkpoint"), "old");
}

TEST_F(FilesTest, MakeDirectoriesNamesWhatItCouldNotMake) {
  MakeDirectories(dir_ + "/a/b/c");
  MakeDirectories(dir_ + "/a/b/c");  // exists already: fine
  EXPECT_TRUE(std::filesystem::is_directory(dir_ + "/a/b/c"));
  WriteFileAtomically(dir_ + "/file", "x");
  try {
    MakeDirectories(dir_ + "/file/run", "output directory");
    FAIL() << "a directory under a regular file was made";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("cannot create output directory " + dir_ + "/file/run: ", 0), 0u) << e.what();
  }
  EXPECT_THROW(ReadWholeFile(dir_ + "/a", "config file"), UserError);  // a directory reads as nothing: refused
}

TEST_F(FilesTest, ASecondLockIsRefusedWithTheHolderNamed) {
  const std::string path = dir_ + "/.lock";
  EXPECT_FALSE(FileLockHeld(path));  // no file yet
  auto lock = std::make_unique<FileLock>(path, "a writer", "stop it first");
  EXPECT_TRUE(FileLockHeld(path));
  try {
    FileLock second(path, "another tempered-train writing to " + dir_, "choose another out_dir");
    FAIL() << "two locks on one file";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()),
              "another tempered-train writing to " + dir_ + " holds " + path + "; choose another out_dir");
  }
  EXPECT_TRUE(FileLockHeld(path));  // the refused attempt did not release the first lock
  lock.reset();
  EXPECT_FALSE(FileLockHeld(path));
  FileLock again(path, "a writer", "stop it first");
}

TEST_F(FilesTest, TheLockDiesWithItsProcess) {
  const std::string path = dir_ + "/.lock";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    FileLock lock(path, "the child", "");
    (void)!::write(ready[1], "x", 1);
    ::pause();  // until SIGKILL: no destructor runs
    ::_exit(0);
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  EXPECT_TRUE(FileLockHeld(path));
  EXPECT_THROW(FileLock(path, "the child", ""), UserError);
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_FALSE(FileLockHeld(path));
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST(Utf8SafeTest, ValidTextIsUnchanged) {
  for (const std::string text : {"", "/data/train/n01440764/a.JPEG", "caf\xC3\xA9", "\xE2\x82\xAC 5", "\xF0\x9F\x98\x80",
                                 "\xEF\xBF\xBF", "\xF4\x8F\xBF\xBF"}) {
    EXPECT_EQ(Utf8Safe(text), text);
  }
}

TEST(Utf8SafeTest, EveryByteOutsideAValidSequenceIsEscaped) {
  EXPECT_EQ(Utf8Safe("caf\xE9.jpg"), "caf\\xE9.jpg");               // Latin-1
  EXPECT_EQ(Utf8Safe("\xFF\xFE"), "\\xFF\\xFE");                     // never in UTF-8
  EXPECT_EQ(Utf8Safe("\xC3"), "\\xC3");                              // cut short at the end
  EXPECT_EQ(Utf8Safe("\xC3x"), "\\xC3x");                            // cut short in the middle
  EXPECT_EQ(Utf8Safe("\xC0\xAF"), "\\xC0\\xAF");                     // overlong '/'
  EXPECT_EQ(Utf8Safe("\xE0\x80\xAF"), "\\xE0\\x80\\xAF");            // overlong '/', three bytes
  EXPECT_EQ(Utf8Safe("\xED\xA0\x80"), "\\xED\\xA0\\x80");            // a surrogate
  EXPECT_EQ(Utf8Safe("\xF4\x90\x80\x80"), "\\xF4\\x90\\x80\\x80");   // above U+10FFFF
  EXPECT_EQ(Utf8Safe("\x80 \xC3\xA9"), "\\x80 \xC3\xA9");            // a stray continuation byte, then valid text
}

}  // namespace
}  // namespace tempered
