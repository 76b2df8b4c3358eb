// --help for Tempered's binaries: the binary's own flags, grouped, each with its default and the config field it
// overrides, then examples. gflags' own --help lists every flag linked into the process, LibTorch's and glog's
// first (tempered-train: 305 lines, its own flags from line 249); that list stays behind --helpfull.
#pragma once

#include <string>
#include <vector>

namespace google {
namespace protobuf {
class Message;
}  // namespace protobuf
}  // namespace google

namespace tempered {

struct FlagDoc {
  std::string flag;   // without dashes: "tau"
  std::string group;  // the heading it is listed under: "loss"
  std::string field;  // the config field it overrides, "loss.tau"; "" when it overrides none
};

struct FlagHelp {
  std::string summary;              // what the binary does, one line: "one contrastive training run"
  std::string usage;                // its command lines, after "usage: "; both printed first, also by --helpfull
  std::string defined_in;           // the file whose DEFINE_* flags are the binary's own: "trainer/main.cc"
  std::vector<std::string> groups;  // headings, in order
  std::vector<FlagDoc> flags;       // the order within a group is this order
  std::string config_name;          // the message the fields are of, "RunConfig" ("" when no flag has a field)
  const google::protobuf::Message* defaults = nullptr;  // a field flag's default is its field's value here
  std::vector<std::string> examples;
};

// The help text. A flag of `defined_in` that `flags` does not list goes under "other", so that none is hidden.
std::string FormatFlagHelp(const FlagHelp& help);

// gflags::ParseCommandLineFlags (removing the flags from argv), except that --help, --helpshort and -h print
// FormatFlagHelp(help) to stdout and exit 0. --helpfull and gflags' other help flags (--helpmatch, --helpxml,
// --version) keep gflags' behaviour.
void ParseFlagsWithHelp(const FlagHelp& help, int* argc, char*** argv);

// The text of the (possibly nested) scalar field `path` of `message` as a flag would take it: "loss.tau" -> "0.2",
// "loss.name" -> "infonce" (enums lower-case), a repeated field comma-separated.
std::string FieldText(const google::protobuf::Message& message, const std::string& path);

}  // namespace tempered
