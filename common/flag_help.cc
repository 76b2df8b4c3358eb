#include "common/flag_help.h"

#include <gflags/gflags.h>
#include <glog/logging.h>
#include <google/protobuf/message.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

namespace tempered {

namespace pb = google::protobuf;

namespace {

constexpr size_t kLineWidth = 116;
constexpr size_t kMaxNameColumn = 36;  // a longer "--flag=default" puts its description on the next line

// What gflags prints after "<program>: " (--helpfull), and --help after the program's name.
std::string UsageMessage(const FlagHelp& help) { return help.summary + "\nusage: " + help.usage; }

bool EndsWith(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The flags DEFINE_d in `file` (gflags records __FILE__, which the build may give as absolute or relative).
std::map<std::string, gflags::CommandLineFlagInfo> FlagsDefinedIn(const std::string& file) {
  std::vector<gflags::CommandLineFlagInfo> all;
  gflags::GetAllFlags(&all);
  std::map<std::string, gflags::CommandLineFlagInfo> own;
  for (const auto& info : all) {
    if (info.filename == file || EndsWith(info.filename, "/" + file)) own[info.name] = info;
  }
  return own;
}

std::string DefaultText(const FlagDoc& doc, const gflags::CommandLineFlagInfo& info, const FlagHelp& help) {
  const std::string text = !doc.field.empty() && help.defaults ? FieldText(*help.defaults, doc.field)
                                                               : info.default_value;
  return text.empty() ? "\"\"" : text;
}

size_t LastLineLength(const std::string& text) {
  const size_t newline = text.rfind('\n');
  return newline == std::string::npos ? text.size() : text.size() - newline - 1;
}

// Appends `words` to `out`, wrapped at kLineWidth; continuation lines start at column `indent`.
void AppendWrapped(const std::string& words, size_t indent, std::string* out) {
  size_t column = LastLineLength(*out);
  std::istringstream in(words);
  bool first = true;
  for (std::string word; in >> word; first = false) {
    if (!first && column + 1 + word.size() > kLineWidth) {
      *out += "\n" + std::string(indent, ' ');
      column = indent;
    } else if (!first) {
      *out += ' ';
      ++column;
    }
    *out += word;
    column += word.size();
  }
  *out += '\n';
}

// "  --tau=0.2        temperature, > 0 [loss.tau]"
std::string FlagLine(const FlagDoc& doc, const gflags::CommandLineFlagInfo& info, const FlagHelp& help,
                     size_t name_column) {
  const std::string name = "  --" + doc.flag + "=" + DefaultText(doc, info, help);
  std::string line = name.size() + 2 <= name_column ? name + std::string(name_column - name.size(), ' ')
                                                    : name + "\n" + std::string(name_column, ' ');
  AppendWrapped(info.description + (doc.field.empty() ? "" : " [" + doc.field + "]"), name_column, &line);
  return line;
}

std::string Header(const FlagHelp& help) {
  std::string text = std::string(gflags::ProgramInvocationShortName()) + ": " + UsageMessage(help) + "\n\n";
  std::string columns = "Each flag: --flag=DEFAULT, what it does";
  if (!help.config_name.empty()) {
    columns += ", and [the field of " + help.config_name + " it overrides] (proto/tempered.proto): a flag given " +
               "replaces the field's value from the file or the default";
  }
  AppendWrapped(columns + ".", 0, &text);
  return text;
}

std::string Footer(const FlagHelp& help) {
  std::string text;
  if (!help.examples.empty()) {
    text += "\nexamples:\n";
    for (const std::string& example : help.examples) text += "  " + example + "\n";
  }
  return text + "\n--helpfull lists every flag linked in, LibTorch's, glog's and gflags' too (--v, --flagfile, ...).\n";
}

}  // namespace

std::string FieldText(const pb::Message& message, const std::string& path) {
  const pb::Message* m = &message;
  size_t begin = 0;
  for (size_t dot; (dot = path.find('.', begin)) != std::string::npos; begin = dot + 1) {
    const pb::FieldDescriptor* parent = m->GetDescriptor()->FindFieldByName(path.substr(begin, dot - begin));
    CHECK(parent != nullptr && parent->type() == pb::FieldDescriptor::TYPE_MESSAGE) << "no message at " << path;
    m = &m->GetReflection()->GetMessage(*m, parent);
  }
  const pb::FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(path.substr(begin));
  CHECK(f != nullptr) << "no field " << path << " in " << message.GetDescriptor()->name();
  if (f->has_presence() && !m->GetReflection()->HasField(*m, f)) return "";  // e.g. data.prefetch_steps
  const int count = f->is_repeated() ? m->GetReflection()->FieldSize(*m, f) : 1;
  std::string text;
  for (int i = 0; i < count; ++i) {
    std::string item;
    pb::TextFormat::PrintFieldValueToString(*m, f, f->is_repeated() ? i : -1, &item);
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
      std::transform(item.begin(), item.end(), item.begin(), ::tolower);
    } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
      item = item.size() >= 2 ? item.substr(1, item.size() - 2) : item;  // the text format's quotes
    }
    text += (i > 0 ? "," : "") + item;
  }
  return text;
}

std::string FormatFlagHelp(const FlagHelp& help) {
  std::map<std::string, gflags::CommandLineFlagInfo> own = FlagsDefinedIn(help.defined_in);
  std::vector<FlagDoc> docs;
  for (const FlagDoc& doc : help.flags) {
    CHECK(own.count(doc.flag)) << "--" << doc.flag << " is documented but not defined in " << help.defined_in;
    docs.push_back(doc);
  }
  std::vector<std::string> groups = help.groups;
  for (const auto& entry : own) {
    const std::string& name = entry.first;  // not a structured binding: C++17 lambdas cannot capture those
    const bool listed = std::any_of(docs.begin(), docs.end(), [&](const FlagDoc& d) { return d.flag == name; });
    if (!listed) docs.push_back({name, "other", ""});
  }
  if (docs.size() > help.flags.size()) groups.push_back("other");
  size_t name_column = 0;
  for (const FlagDoc& doc : docs) {
    name_column = std::max(name_column, 4 + doc.flag.size() + 1 + DefaultText(doc, own.at(doc.flag), help).size() + 2);
  }
  name_column = std::min(name_column, kMaxNameColumn);
  std::string text = Header(help);
  for (const std::string& group : groups) {
    text += "\n" + group + ":\n";
    for (const FlagDoc& doc : docs) {
      if (doc.group == group) text += FlagLine(doc, own.at(doc.flag), help, name_column);
    }
  }
  return text + Footer(help);
}

void ParseFlagsWithHelp(const FlagHelp& help, int* argc, char*** argv) {
  // -h is what most people try first; gflags would refuse it as an unknown flag.
  static char kHelp[] = "--help";
  for (int i = 1; i < *argc && std::strcmp((*argv)[i], "--") != 0; ++i) {
    if (std::strcmp((*argv)[i], "-h") == 0) (*argv)[i] = kHelp;
  }
  gflags::SetUsageMessage(UsageMessage(help));
  gflags::ParseCommandLineNonHelpFlags(argc, argv, /*remove_flags=*/true);
  std::string help_flag, helpshort_flag;
  gflags::GetCommandLineOption("help", &help_flag);
  gflags::GetCommandLineOption("helpshort", &helpshort_flag);
  if (help_flag == "true" || helpshort_flag == "true") {
    std::fputs(FormatFlagHelp(help).c_str(), stdout);
    std::exit(0);
  }
  gflags::HandleCommandLineHelpFlags();  // --helpfull, --helpmatch, --helpxml, --version: gflags' own
}

}  // namespace tempered
