// tempered-train's config path (common/config.h): ReadRunConfig, the flag overrides (SetFieldByPath), ResolveConfig,
// ValidateConfig, and the JSON mapping a valid config is saved with. UserError or a valid config, nothing else.
//
// Flag overrides ride in the input as comment lines "#set path=value" (the text-format parser skips them), so one
// input is both a config file and the command line that overrides it.
#include <cstdint>
#include <sstream>
#include <string>

#include "common/config.h"
#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static tempered::fuzz::InputFile file;
  const std::string& path = file.Write(data, size);
  tempered::fuzz::AcceptsOrRejects([&] {
    tempered::RunConfig config = tempered::ReadRunConfig(path);
    std::istringstream lines(std::string(reinterpret_cast<const char*>(data), size));
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("#set ", 0) != 0) continue;
      const size_t eq = line.find('=');
      if (eq == std::string::npos) continue;
      tempered::SetFieldByPath(&config, line.substr(5, eq - 5), line.substr(eq + 1));
    }
    const tempered::RunConfig resolved = tempered::ResolveConfig(config);
    tempered::ValidateConfig(resolved);
    // What a run does with a valid config before training: save it as JSON (result.json) and read it back.
    tempered::RunConfig reread;
    tempered::FromJson(tempered::ToJson(resolved), &reread, "the resolved config");
  });
  return 0;
}
