#include "trainer/io/progress.h"

#include <unistd.h>

#include <glog/logging.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "common/config.h"

namespace tempered {

std::string FormatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", static_cast<long>(s / 3600), static_cast<long>(s / 60 % 60),
                static_cast<long>(s % 60));
  return buf;
}

void ReportProgress(const std::string& text, double fraction) {
  static const bool terminal = ::isatty(STDERR_FILENO) == 1;
  if (!terminal) {
    LOG(INFO) << text;
    return;
  }
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(std::clamp(fraction, 0.0, 1.0) * kWidth);
  std::fprintf(stderr, "\r[%s%s] %s\033[K%s", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(), text.c_str(), fraction >= 1 ? "\n" : "");
  std::fflush(stderr);
}

void WriteProgress(const RunConfig& config, int64_t step, int64_t total, int64_t epoch, double loss,
                   double images_per_second, double eta, double tau) {
  static bool warned = false;  // rank 0 writes it, from the main thread only
  nlohmann::json progress = {{"step", step},       {"total_steps", total}, {"epoch", epoch},
                             {"epochs", config.epochs()}, {"loss", loss}, {"tau", tau}};
  // A rate timed over 0 s is infinite, and so its ETA: JSON has no such number (nlohmann would write null, which
  // launch/sweep/sweep_state.cc's reader refuses), and a missing field reads there as not known.
  if (std::isfinite(images_per_second)) progress["images_per_second"] = images_per_second;
  if (std::isfinite(eta)) progress["eta_seconds"] = eta;
  try {
    WriteFileAtomically(config.out_dir() + "/progress.json", progress.dump() + "\n");
  } catch (const std::exception& e) {
    if (!warned) LOG(WARNING) << e.what() << "; training goes on without progress.json";
    warned = true;
  }
}

}  // namespace tempered
