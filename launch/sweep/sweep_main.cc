// tempered-sweep: a grid of tempered-train runs (temperatures, losses, ...) run locally or on Slurm, resumable,
// aggregated into one report.
//   tempered-sweep [--spec sweep.pbtxt] [--out_dir DIR] [--backend local|slurm]   run (or resume) a sweep
//   tempered-sweep --status DIR                                                 print a sweep's status table
//   tempered-sweep --print_default_spec                                         the built-in quick sweep
// main() only parses flags, builds the options and makes one call (docs/contributing.md).
#include <unistd.h>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include <algorithm>
#include <cstdio>

#include "common/errors.h"
#include "common/flag_help.h"
#include "launch/sweep/scheduler_process.h"
#include "launch/sweep/sweep.h"
#include "launch/sweep/sweep_spec.h"
#include "launch/sweep/sweep_state.h"

DEFINE_string(spec, "", "SweepSpec in protobuf text format (proto/tempered.proto); empty: the built-in quick sweep "
                        "on Fashion-MNIST (--print_default_spec shows it)");
DEFINE_string(out_dir, "tempered-sweep", "sweep directory; re-running the same command on it resumes the sweep");
DEFINE_string(backend, "", "local|slurm (unset: the spec's)");
DEFINE_string(train_binary, "", "tempered-train to run (default: next to tempered-sweep, or ../trainer/)");
DEFINE_string(mpirun, "mpirun", "mpirun to launch each run with");
DEFINE_string(gpus, "", "this node's GPUs for runs with gpus_per_rank > 0, e.g. 0,1,2,3 (each run gets its own "
                        "through CUDA_VISIBLE_DEVICES); empty: CUDA_VISIBLE_DEVICES if set, else nvidia-smi -L");
DEFINE_double(poll_seconds, 0, "how often to check runs (0: local 0.5 s, Slurm 2 s)");
DEFINE_string(status, "", "print the progress of the sweep in this directory (runs finished, running, pending, "
                          "failed; slots; ETA), its runs' table and the best run so far per loss, and exit");
DEFINE_bool(print_default_spec, false, "print the built-in quick sweep's spec and exit");

namespace {

tempered::FlagHelp SweepHelp() {
  tempered::FlagHelp help;
  help.summary = "a grid of tempered-train runs (temperatures, losses, ...) run locally or on Slurm, resumable.";
  help.usage =
      "tempered-sweep [--spec sweep.pbtxt] [--out_dir DIR] [--backend local|slurm]   run (or resume) a sweep\n"
      "       tempered-sweep --status DIR   its progress, a table of its runs and the best run so far per loss";
  help.defined_in = "launch/sweep/sweep_main.cc";
  help.groups = {"sweep", "launching runs", "inspecting"};
  help.flags = {{"spec", "sweep", ""},
                {"out_dir", "sweep", ""},
                {"backend", "sweep", "backend"},
                {"train_binary", "launching runs", ""},
                {"mpirun", "launching runs", ""},
                {"gpus", "launching runs", ""},
                {"poll_seconds", "launching runs", ""},
                {"status", "inspecting", ""},
                {"print_default_spec", "inspecting", ""}};
  help.config_name = "SweepSpec";
  help.examples = {
      "tempered-sweep --out_dir quick             # the built-in quick sweep: 38 short runs on Fashion-MNIST",
      "tempered-sweep --spec specs/paper_fashion_mnist.pbtxt --out_dir paper   # the same command again resumes",
      "tempered-sweep --status quick              # from another terminal, while it runs or after",
      "tempered-sweep --print_default_spec > my_sweep.pbtxt",
  };
  return help;
}

tempered::SweepOptions OptionsFromFlags() {
  tempered::SweepSpec spec = FLAGS_spec.empty() ? tempered::DefaultSweepSpec() : tempered::ReadSweepSpec(FLAGS_spec);
  if (!FLAGS_backend.empty()) {
    tempered::SweepSpec::Backend backend;
    std::string upper = FLAGS_backend;
    std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
    if (!tempered::SweepSpec::Backend_Parse(upper, &backend) || backend == tempered::SweepSpec::BACKEND_UNSPECIFIED) {
      throw tempered::UserError("--backend must be local or slurm, got '" + FLAGS_backend + "'");
    }
    spec.set_backend(backend);
  }
  tempered::SweepOptions options;
  options.machine_cores = tempered::MachineCores();
  options.spec = tempered::ResolveSweepSpec(spec);
  tempered::ValidateSweepSpec(options.spec, options.machine_cores);
  // nvidia-smi only for a sweep that uses GPUs (or a --gpus to check).
  if (tempered::LocalGpusPerRank(options.spec) > 0 || !FLAGS_gpus.empty()) {
    options.node_gpus = tempered::DetectNodeGpus(FLAGS_gpus);
  }
  tempered::ValidateNodeGpus(options.spec, options.node_gpus.size(), options.node_gpus.source);
  options.sweep_dir = tempered::AbsolutePath(FLAGS_out_dir);
  options.backend.train_binary = tempered::FindTrainBinary(FLAGS_train_binary);
  options.backend.mpirun = FLAGS_mpirun;
  options.backend.poll_seconds = FLAGS_poll_seconds;
  options.interactive = ::isatty(STDOUT_FILENO);
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  tempered::ParseFlagsWithHelp(SweepHelp(), &argc, &argv);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  try {
    if (FLAGS_print_default_spec) {
      std::fputs(tempered::kDefaultSweepSpec, stdout);
      return 0;
    }
    if (!FLAGS_status.empty()) {
      tempered::PrintSweepStatus(tempered::AbsolutePath(FLAGS_status));
      return 0;
    }
    return tempered::RunSweep(OptionsFromFlags());
  } catch (const tempered::UserError& e) {
    std::fprintf(stderr, "tempered-sweep: %s\n", e.what());
    return 2;
  }
}
