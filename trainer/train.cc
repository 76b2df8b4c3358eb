// The training loop: steps (trainer/step.h) and, after each, the parts that watch the run: progress and
// TensorBoard, the per-epoch record and convergence curve, checkpoints; then the final evaluation.
#include "trainer/train.h"

#include <malloc.h>

#include <glog/logging.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>
#include <utility>

#include <google/protobuf/text_format.h>

#include "comm/comm.h"
#include "comm/fail_together.h"
#include "common/config.h"
#include "common/files.h"
#include "common/stop.h"
#include "trainer/data/data.h"
#include "trainer/data/prefetch.h"
#include "trainer/device.h"
#include "trainer/environment.h"
#include "trainer/eval/eval.h"
#include "trainer/io/checkpoint.h"
#include "trainer/io/event_writer.h"
#include "trainer/io/npy.h"
#include "trainer/io/progress.h"
#include "trainer/io/result_file.h"
#include "trainer/model/backbone_export.h"
#include "trainer/model/model.h"
#include "trainer/step.h"

namespace tempered {

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// This process's peak resident memory in MiB (VmHWM of /proc/self/status; 0 where there is none).
double PeakRssMib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024;  // "VmHWM:   123456 kB"
  }
  return 0;
}

// SIGTERM / SIGINT / SIGUSR1 set the stop flag (common/stop.h); every rank learns whether any rank has it at each
// host synchronisation of the loop (SyncSteps, every host_sync_every_steps: every step on the CPU by default),
// so all stop together, and set-up work checks it between files. SIGUSR1: mpirun forwards it to every rank of
// the job, on every node, while it answers a SIGTERM by killing them (SIGCONT, then SIGTERM and SIGKILL a second
// apart); the Slurm job script turns Slurm's SIGTERM into one.
void RequestStop(int) {
  NoteStopSignal();
  comm::NoteStopRequested();  // the watchdog records the failure if this rank is stuck in a collective
}

void InstallStopHandlers() {
  std::signal(SIGTERM, RequestStop);
  std::signal(SIGINT, RequestStop);
  std::signal(SIGUSR1, RequestStop);
}

// Runs `fn` on every rank. If it threw on any rank, every rank throws CollectiveError (the lowest failing rank
// reports its own message), so a setup failure on one rank never leaves the others waiting in a collective; if a
// stop signal interrupted it on any rank, every rank throws StoppedBySignal.
void Collectively(const std::function<void()>& fn) {
  std::string error, stopped_during;  // a stop signal on any rank stops every rank, with no error
  try {
    fn();
  } catch (const StoppedBySignal& e) {
    stopped_during = e.during();
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "unknown error";
  }
  if (comm::FirstFailedRank(!error.empty() || !stopped_during.empty()) < 0) return;
  const int first_stopped = comm::FirstFailedRank(!stopped_during.empty());
  if (first_stopped >= 0) throw StoppedBySignal(comm::AllGatherStrings(stopped_during)[first_stopped]);
  comm::FailTogether(error);
}

// Everything the loop needs that does not change between steps.
struct Run {
  RunConfig config;
  std::unique_ptr<FileLock> out_dir_lock;  // rank 0's, for the whole run: one writer per out_dir
  Dataset train, test;
  std::unique_ptr<Negatives> negatives;
  Learner learner;
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;
  torch::Device device = torch::kCPU;
};

void CheckBatchFits(const RunConfig& config, const Dataset& train, int64_t steps_per_epoch) {
  if (steps_per_epoch == 0) {
    throw UserError("batch_size " + std::to_string(config.batch_size()) + " is larger than the " +
                    std::to_string(train.size()) + " training images");
  }
  if (config.batch_size() < comm::Size()) {
    throw UserError("batch_size " + std::to_string(config.batch_size()) + " is smaller than the " +
                    std::to_string(comm::Size()) + " ranks: every rank needs at least one image per step");
  }
}

// Before anything is written there: a second writer (a run started twice, or by a coordinator that was killed
// before it recorded the first) would mix its checkpoints and results with the first one's. tempered-sweep reads
// the lock too (FileLockHeld): a locked run directory is a running run.
std::unique_ptr<FileLock> LockOutDir(const std::string& out_dir) {
  MakeDirectories(out_dir, "output directory");
  return std::make_unique<FileLock>(out_dir + "/" + kOutDirLockFile, "another tempered-train writing to " + out_dir,
                                    "two writers would mix their checkpoints and results, so wait for it to end, "
                                    "stop it, or choose another out_dir");
}

// Builds data, negatives, model, optimiser and reducer. Collective: a failure on any rank fails every rank.
Run Setup(const RunConfig& config) {
  Run t;
  t.config = config;
  Collectively([&] {
    if (comm::Rank() == 0) t.out_dir_lock = LockOutDir(config.out_dir());
    t.train = LoadDataset(config.data(), /*train=*/true);
    t.test = LoadDataset(config.data(), /*train=*/false);
    t.steps_per_epoch = StepsPerEpoch(t.train.size(), config.batch_size());
    CheckBatchFits(config, t.train, t.steps_per_epoch);
  });
  t.total_steps = t.steps_per_epoch * config.epochs();
  if (config.max_steps() > 0) t.total_steps = std::min(t.total_steps, config.max_steps());
  // Collectively: a node with fewer GPUs than ranks refuses on its ranks only, and the others must not wait for them.
  Collectively([&] { t.device = DeviceFor(config); });
  const torch::Device device = t.device;
  if (config.bf16() && device.is_cpu() && comm::Rank() == 0 && !CpuHasNativeBf16()) {
    LOG(WARNING) << "bf16 on a CPU without AVX512-BF16 or AMX (/proc/cpuinfo): slower than fp32 here";
  }
  t.negatives = MakeNegatives(config, t.train.size(), device);
  t.learner = MakeLearner(config, t.train, *t.negatives, device);
  return t;
}

void LogConfig(const RunConfig& config) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(config, &text);
  LOG(INFO) << "tempered-train: " << comm::Size() << " rank(s), " << at::get_num_threads()
            << " thread(s) per rank, resolved config:\n" << text;
}

// The config with loss.tau at the tau the run trains at now (loss.tau_mode), for the metrics measured at the run's
// tau (the relative penalty's entropy).
RunConfig AtCurrentTau(const Run& t) {
  RunConfig config = t.config;
  config.mutable_loss()->set_tau(static_cast<float>(CurrentTau(t.learner)));
  return config;
}

// Evaluate with a line before and after on rank 0 (evaluation of the full data set takes seconds to minutes).
// sets, when given: what Evaluate embedded (on rank 0).
Metrics EvaluateAndReport(Run& t, const std::string& when, EvaluatedSets* sets = nullptr) {
  const Clock::time_point start = Clock::now();
  BroadcastBuffers(t.learner.encoder);  // one model evaluated, on every rank
  if (comm::Rank() == 0) {
    LOG(INFO) << "evaluating " << when << ": embedding " << t.train.size() << " train and " << t.test.size()
              << " test images, kNN, representation metrics"
              << (t.config.eval().linear_epochs() > 0 ? ", linear classifier" : "");
  }
  Metrics metrics = Evaluate(t.learner.encoder, t.train, t.test, AtCurrentTau(t), sets);
  if (comm::Rank() == 0) {
    LOG(INFO) << "evaluated " << when << " in " << FormatDuration(SecondsSince(start)) << ": kNN top-1 "
              << metrics.knn_top1() << "%, linear top-1 " << metrics.linear_top1() << "%, uniformity "
              << metrics.uniformity() << ", tolerance " << metrics.tolerance();
  }
  return metrics;  // Evaluate leaves the encoder in the mode it found it in
}

// The other ranks wait here while rank 0 alone finishes an evaluation (kNN, metrics, linear classifier: minutes to
// hours, by the data set's size), a wait the collective timeout does not fit: theirs is eval_timeout_seconds. Rank
// 0, which arrives last, keeps the collective timeout: a rank that stalled meanwhile is still caught.
void WaitForRankZero(const RunConfig& config) {
  constexpr double kDefaultEvalTimeoutSeconds = 86400;
  const double timeout = config.eval_timeout_seconds() > 0 ? config.eval_timeout_seconds() : kDefaultEvalTimeoutSeconds;
  std::optional<comm::LongWait> long_wait;
  if (comm::Rank() != 0) {
    long_wait.emplace(timeout, "rank 0's evaluation; rank 0 stalled or died, or its evaluation needs a longer "
                               "eval_timeout_seconds");
  }
  comm::Barrier();
}


// RunResult.step_loss keeps the last max(kStepLossesKept, steps_per_epoch) steps (RecordEpoch needs the epoch's);
// the oldest are dropped in batches, so the cost per step stays constant.
constexpr int kStepLossesKept = 10000;
void RecordStepLoss(const Run& t, int64_t step, double loss, RunResult* result) {
  StepLoss* entry = result->add_step_loss();
  entry->set_step(step);
  entry->set_loss(loss);
  const int keep = static_cast<int>(std::max<int64_t>(kStepLossesKept, t.steps_per_epoch));
  if (result->step_loss_size() >= 2 * keep) {
    result->mutable_step_loss()->DeleteSubrange(0, result->step_loss_size() - keep);
  }
}

// Appends the epoch's summary; its mean loss comes from the step losses, so it is right after a resume too.
void RecordEpoch(const Run& t, int64_t epoch, int64_t step, double seconds, int64_t steps_timed, double lr,
                 RunResult* result) {
  const int64_t first = epoch * t.steps_per_epoch;
  double total = 0;
  for (const StepLoss& s : result->step_loss()) {
    if (s.step() > first && s.step() <= step) total += s.loss();
  }
  EpochResult* e = result->add_epochs();
  e->set_epoch(static_cast<int32_t>(epoch + 1));
  e->set_global_step(step);
  e->set_mean_loss(total / std::max<int64_t>(1, step - first));
  e->set_images_per_second(steps_timed * t.config.batch_size() / std::max(seconds, 1e-9));
  e->set_lr(lr);
  e->set_tau(CurrentTau(t.learner));
}

// After an epoch: the weight norm, the convergence curve's bounded evaluation (every epoch, the last included) and
// the full evaluation when eval.every_epochs asks for one before the end (the end's is RunResult.final).
// Collective.
void EvaluateEpoch(Run& t, int64_t epoch, int64_t step, EventWriter* events, EpochResult* record) {
  const EvalConfig& eval = t.config.eval();
  record->set_weight_norm(WeightNorm(t.learner.encoder));
  if (events) events->AddScalar("train/weight_norm", step, record->weight_norm());
  const bool curve = eval.curve_train_samples() > 0;
  if (curve) {
    BroadcastBuffers(t.learner.encoder);  // one model evaluated, on every rank (EvaluateAndReport does its own)
    *record->mutable_metrics() = EvaluateCurve(t.learner.encoder, t.train, t.test, AtCurrentTau(t));
    if (events) AddMetrics(*events, step, record->metrics(), eval, "curve/");
    if (comm::Rank() == 0) {
      const Metrics& m = record->metrics();
      LOG(INFO) << "epoch " << epoch + 1 << " curve (kNN of " << m.knn_test_samples() << " test images against "
                << m.knn_train_samples() << " train images): kNN top-1 " << m.knn_top1() << "%, uniformity "
                << m.uniformity() << ", tolerance " << m.tolerance() << ", alignment " << m.alignment()
                << ", weight norm " << record->weight_norm();
    }
  }
  const bool full = step < t.total_steps && eval.every_epochs() > 0 && (epoch + 1) % eval.every_epochs() == 0;
  if (full) {
    Metrics* metrics = curve ? record->mutable_full() : record->mutable_metrics();
    *metrics = EvaluateAndReport(t, "after epoch " + std::to_string(epoch + 1));
    if (events) AddMetrics(*events, step, *metrics, eval);
  }
  if (events) events->Flush();
  if (curve || full) WaitForRankZero(t.config);
}

// Collective. The checkpoint holds rank 0's running statistics, and so, from here on, does every rank: a run
// resumed from it goes on exactly as this one does.
void Checkpoint(Run& t, TrainingState& state) {
  BroadcastBuffers(t.learner.encoder);
  state.bank = t.negatives->State();
  state.logit_scale = t.learner.logit_scale;
  if (comm::Rank() == 0) {
    SaveCheckpoint(t.config.out_dir() + "/checkpoint.pt", t.config, t.learner.encoder, *t.learner.optimizer, state);
  }
}

// A rank other than 0 must see the checkpoint that rank 0 found; when it does not, the sentence says where to look.
void RequireReadable(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw UserError("rank " + std::to_string(comm::Rank()) + " cannot read the checkpoint " + path +
                    " that rank 0 resumes from (" + std::strerror(errno) +
                    "): out_dir must be on a file system that every rank shares");
  }
}

// Loads out_dir/checkpoint.pt when resuming and it exists, as rank 0 decides for every rank: ranks that looked for
// themselves could disagree (a lagging shared file system, an out_dir on each node's own disk) and then enter
// different collectives. Collective: every rank reads the same file, and a rank that cannot fails them all.
TrainingState Restore(Run& t, const TrainOptions& options) {
  TrainingState state;
  const std::string path = t.config.out_dir() + "/checkpoint.pt";
  std::error_code ignored;
  torch::Tensor resume = torch::tensor(
      {comm::Rank() == 0 && options.resume && std::filesystem::exists(path, ignored) ? 1 : 0}, torch::kLong);
  comm::Broadcast(resume, 0);
  if (resume.item<int64_t>() == 0) return state;
  Collectively([&] {
    if (comm::Rank() != 0) RequireReadable(path);
    LoadCheckpoint(path, t.config, t.learner.device, t.learner.encoder, *t.learner.optimizer, &state);
  });
  if (state.bank.defined()) t.negatives->Restore(state.bank);
  if (state.logit_scale.defined() && t.learner.logit_scale.defined()) {
    torch::NoGradGuard no_grad;  // in place: the optimiser holds this tensor
    t.learner.logit_scale.copy_(state.logit_scale);
  }
  if (comm::Rank() == 0) LOG(INFO) << "resumed from " << path << " at global step " << state.step;
  return state;
}

// A non-finite loss ends the run on every rank together (every rank sees the same all-reduced loss). %g-style
// numbers: a tau of 1e-7 must not read as 0.000000.
CollectiveError NonFiniteLoss(double loss, int64_t step, int64_t epoch, double lr, double tau) {
  std::ostringstream message;
  message << "the loss became " << (std::isnan(loss) ? "NaN" : "infinite") << " at global step " << step + 1
          << " (epoch " << epoch + 1 << ", lr " << lr << ", tau " << tau << ")";
  return CollectiveError(message.str(), comm::Rank() == 0);
}


// What the loop tells the parts that watch it, after each step.
struct StepDone {
  int64_t step;   // global steps done, this one included
  int64_t epoch;  // the step's epoch, 0-based
  double loss;    // the global batch's mean loss, read at the steps that synchronise (every log step and epoch end
                  // among them); NaN at the others
  double lr;
  double input_wait_seconds;  // the step's wait for its views (the prefetch queue, or making them in place)
  const SimilaritySample* sample;  // at the steps that log (rank 0), else null
};

class StepObserver {
 public:
  virtual ~StepObserver() = default;
  virtual void AfterStep(const StepDone& done) = 0;
};

bool IsLogStep(const Run& t, int64_t step) { return step % t.config.log_every_steps() == 0 || step == t.total_steps; }

// Rank 0's progress line, progress.json, and TensorBoard scalars and similarity histograms, every log_every_steps.
// Its rate is the steps' own: the epoch ends' evaluations inside a window (evaluation_seconds, a running total) are
// left out, as the result's per-epoch rates leave them out (on a small subset they were most of a window).
class ProgressLog : public StepObserver {
 public:
  ProgressLog(const Run& t, EventWriter* events, std::function<double()> evaluation_seconds)
      : t_(t), events_(events), evaluation_seconds_(std::move(evaluation_seconds)) {}

  void AfterStep(const StepDone& d) override {
    ++window_steps_;
    window_input_wait_ += d.input_wait_seconds;
    if (comm::Rank() != 0 || !IsLogStep(t_, d.step)) return;
    const double evaluated = evaluation_seconds_() - evaluation_seconds_at_start_;
    const double seconds = SecondsSince(window_start_) - evaluated;
    const double rate = window_steps_ * t_.config.batch_size() / seconds;
    const double input_wait = window_input_wait_ / seconds;
    const double eta = (t_.total_steps - d.step) * t_.config.batch_size() / rate;
    const int64_t epochs = (t_.total_steps + t_.steps_per_epoch - 1) / t_.steps_per_epoch;
    std::ostringstream line;
    line << "step " << d.step << "/" << t_.total_steps << "  epoch " << d.epoch + 1 << "/" << epochs << "  loss "
         << d.loss << "  lr " << d.lr << "  " << static_cast<int64_t>(rate) << " img/s  input wait "
         << static_cast<int>(std::lround(100 * input_wait)) << "%  ETA " << FormatDuration(eta);
    ReportProgress(line.str(), static_cast<double>(d.step) / t_.total_steps);
    const double tau = CurrentTau(t_.learner);
    WriteProgress(t_.config, d.step, t_.total_steps, d.epoch + 1, d.loss, rate, eta, tau);
    events_->AddScalar("train/loss", d.step, d.loss);
    events_->AddScalar("train/lr", d.step, d.lr);
    events_->AddScalar("train/tau", d.step, tau);
    events_->AddScalar("train/images_per_second", d.step, rate);
    events_->AddScalar("train/input_wait_fraction", d.step, input_wait);
    const SimilaritySample& s = *d.sample;
    AddSimilarityHistograms(*events_, d.step, s.anchors, s.candidates, s.positive, s.exclude);
    events_->Flush();
    window_start_ = Clock::now();
    evaluation_seconds_at_start_ = evaluation_seconds_();
    window_steps_ = 0;
    window_input_wait_ = 0;
  }

 private:
  const Run& t_;
  EventWriter* events_;
  std::function<double()> evaluation_seconds_;
  Clock::time_point window_start_ = Clock::now();
  double evaluation_seconds_at_start_ = 0;
  int64_t window_steps_ = 0;
  double window_input_wait_ = 0;  // of rank 0's steps in the window: "input wait" is its fraction of their time
};

// At the end of each epoch: its record in the result and its evaluation (EvaluateEpoch); between, the result's step
// count and training time, which leaves the evaluations out.
class EpochLog : public StepObserver {
 public:
  EpochLog(Run& t, RunResult& result, EventWriter* events)
      : t_(t), result_(result), events_(events), train_seconds_(result.train_seconds()) {}

  void AfterStep(const StepDone& d) override {
    ++steps_timed_;
    const bool epoch_done = d.step % t_.steps_per_epoch == 0 || d.step == t_.total_steps;
    if (epoch_done) {
      const double seconds = SecondsSince(epoch_start_);
      train_seconds_ += seconds;
      RecordEpoch(t_, d.epoch, d.step, seconds, steps_timed_, d.lr, &result_);
      const Clock::time_point evaluation_start = Clock::now();
      EvaluateEpoch(t_, d.epoch, d.step, events_, result_.mutable_epochs(result_.epochs_size() - 1));
      epoch_start_ = Clock::now();
      evaluation_seconds_ += std::chrono::duration<double>(epoch_start_ - evaluation_start).count();
      steps_timed_ = 0;
    }
    result_.set_global_steps(d.step);
    result_.set_train_seconds(train_seconds_ + (epoch_done ? 0 : SecondsSince(epoch_start_)));
  }

  double train_seconds() const { return train_seconds_; }
  double evaluation_seconds() const { return evaluation_seconds_; }  // of this attempt's epoch ends

 private:
  Run& t_;
  RunResult& result_;
  EventWriter* events_;
  double train_seconds_;
  double evaluation_seconds_ = 0;
  Clock::time_point epoch_start_ = Clock::now();
  int64_t steps_timed_ = 0;
};

InputOptions InputOptionsFor(const Run& t) {
  InputOptions options;
  options.global_batch = t.config.batch_size();
  options.steps_per_epoch = t.steps_per_epoch;
  options.rank = comm::Rank();
  options.world = comm::Size();
  options.seed = t.config.seed();
  options.views = t.negatives->views();
  options.augment = AugmentOptionsFrom(t.config.data());
  const DataConfig::Augmentation where = t.config.data().augmentation();
  options.pin = t.learner.device.is_cuda();
  options.batched = !t.train.streamed() &&
                    (where == DataConfig::BATCHED || (where == DataConfig::AUGMENT_AUTO && options.pin));
  return options;
}

enum class StepsEnd { kFinished, kStopped, kPaused };

// The step at which a run asked to pause at `fraction` of its steps stops (0: no pause, also when the fraction
// rounds to the last step). At least step 1.
int64_t PauseStep(double fraction, int64_t total_steps) {
  if (fraction <= 0) return 0;
  const int64_t step = std::max<int64_t>(1, std::llround(fraction * total_steps));
  return step < total_steps ? step : 0;
}

// The steps from state.step to the end, each followed by the observers, with a checkpoint (and result.json) every
// checkpoint_every_steps, at the end, on a stop request and at `pause_step` (0: none). A run resumed at or beyond
// its pause step pauses before any step.
// The step's views. A streamed file that became unreadable mid-run fails one rank's input: every rank learns it
// before the step's collectives, and the job ends together with one sentence naming the file and the step (the
// last checkpoint stays as it was). In-memory data cannot fail here and skips the agreement's all-reduce.
StepInput NextInput(Run& t, Prefetcher& inputs, int64_t step) {
  if (!t.train.streamed()) return inputs.Next();
  StepInput input;
  Collectively([&] {
    try {
      input = inputs.Next();
    } catch (const UserError& e) {
      throw UserError(std::string(e.what()) + " (read for global step " + std::to_string(step + 1) +
                      "; data.skip_bad_images: true replaces such images)");
    }
  });
  return input;
}

// RunConfig.host_sync_every_steps's default on a GPU (proto/tempered.proto).
constexpr int64_t kGpuSyncEverySteps = 10;

// A step taken whose loss the host has not read yet.
struct PendingStep {
  torch::Tensor loss_sum;  // this rank's (Step)
  int64_t step, epoch;     // 0-based
  double lr;
};

// Reads the pending steps' losses (SyncSteps) into the result; throws NonFiniteLoss at the first that is not
// finite. Returns whether any rank was asked to stop. Collective.
bool SyncPending(Run& t, std::vector<PendingStep>& pending, RunResult& result, double* last_loss) {
  std::vector<torch::Tensor> sums;
  for (const PendingStep& p : pending) sums.push_back(p.loss_sum);
  const SyncedSteps synced = SyncSteps(sums, t.negatives->anchors(), StopSignalled());
  for (size_t k = 0; k < pending.size(); ++k) {
    const double loss = synced.losses[k];
    const PendingStep& p = pending[k];
    if (!std::isfinite(loss)) throw NonFiniteLoss(loss, p.step, p.epoch, p.lr, CurrentTau(t.learner));
    RecordStepLoss(t, p.step + 1, loss, &result);
  }
  pending.clear();
  *last_loss = synced.losses.back();
  return synced.stop;
}

StepsEnd TrainSteps(Run& t, TrainingState& state, int64_t pause_step, const std::vector<StepObserver*>& observers,
                    ResultFile& file) {
  if (pause_step > 0 && state.step >= pause_step) return StepsEnd::kPaused;
  RunResult& result = state.result;
  Prefetcher inputs(MakeStepInputs(t.train, InputOptionsFor(t)), state.step, t.total_steps,
                    t.config.data().prefetch_steps());
  const int64_t checkpoint_every =
      t.config.checkpoint_every_steps() > 0 ? t.config.checkpoint_every_steps() : t.steps_per_epoch;
  const int64_t sync_every = t.config.host_sync_every_steps() > 0 ? t.config.host_sync_every_steps()
                             : t.learner.device.is_cuda()         ? kGpuSyncEverySteps
                                                                  : 1;
  std::vector<PendingStep> pending;
  for (int64_t& step = state.step; step < t.total_steps;) {
    const int64_t epoch = step / t.steps_per_epoch;
    const double lr = LearningRate(t.config.optim(), step, t.steps_per_epoch, t.total_steps);
    SimilaritySample sample;
    const bool log = comm::Rank() == 0 && IsLogStep(t, step + 1);
    const Clock::time_point asked = Clock::now();
    const StepInput input = NextInput(t, inputs, step);
    const double input_wait = SecondsSince(asked);
    pending.push_back({Step(t.learner, *t.negatives, input, lr, log ? &sample : nullptr), step, epoch, lr});
    ++step;
    const bool pause = step == pause_step;
    const bool checkpoint = pause || step % checkpoint_every == 0 || step == t.total_steps;
    const bool sync = checkpoint || IsLogStep(t, step) || step % t.steps_per_epoch == 0 || step % sync_every == 0;
    double loss = std::numeric_limits<double>::quiet_NaN();
    const bool stop = sync && SyncPending(t, pending, result, &loss);
    for (StepObserver* observer : observers) {
      observer->AfterStep({step, epoch, loss, lr, input_wait, log ? &sample : nullptr});
    }
    if (stop || checkpoint) {
      Checkpoint(t, state);
      file.Write(result);
    }
    if (step == t.total_steps) break;
    if (stop) return StepsEnd::kStopped;
    if (pause) return StepsEnd::kPaused;
  }
  return StepsEnd::kFinished;
}

// Before the first step: the result so far (RUNNING), and the evaluations of the untrained model that were asked
// for (a resumed run has them already).
void StartResult(Run& t, int64_t step, RunResult* result, ResultFile& file) {
  *result->mutable_config() = t.config;
  result->set_world_size(comm::Size());
  result->set_total_steps(t.total_steps);
  *result->mutable_environment() = GatherEnvironment(t.device);  // this attempt's, also after a resume
  result->set_status(RunResult::RUNNING);
  file.Write(*result);
  if (step != 0) return;
  const EvalConfig& eval = t.config.eval();
  if (eval.at_init()) *result->mutable_initial() = EvaluateAndReport(t, "at initialisation");
  if (eval.raw_pixel_knn() && comm::Rank() == 0) {
    result->set_raw_pixel_knn_top1(RawPixelKnnTop1(t.train, t.test, t.config));
  }
  if (eval.at_init() || eval.raw_pixel_knn()) WaitForRankZero(t.config);
}

// Rank 0 writes the evaluated model (EvaluateAndReport gave every rank rank 0's running statistics):
// out_dir/model.pt for LibTorch and torch.jit.load, out_dir/backbone.pth for torch.load and torchvision
// (backbone_export.h), and with eval.save_embeddings what the final evaluation embedded (SaveEmbeddings). Only a
// finished run gets here: a paused or stopped one leaves these files as they were (none in a fresh out_dir).
void SaveEvaluatedModel(Run& t, const EvaluatedSets& sets) {
  const std::string& dir = t.config.out_dir();
  SaveModel(dir + "/model.pt", t.learner.encoder);
  SaveBackbone(dir + "/backbone.pth", t.learner.encoder, t.config.model(),
               UsesImageNetStem(t.config.model(), ImageSizeOf(t.config.data())));
  if (t.config.eval().save_embeddings()) {
    MakeDirectories(dir + "/embeddings", "embeddings directory");
    SaveEmbeddings(dir + "/embeddings/train_", sets.train, t.train);
    SaveEmbeddings(dir + "/embeddings/test_", sets.test, t.test);
  }
}

// After the last step: the final evaluation, its TensorBoard scalars and the evaluated model (SaveEvaluatedModel).
void FinishResult(Run& t, double train_seconds, EventWriter* events, RunResult* result) {
  result->set_train_peak_rss_mib(PeakRssMib());
  EvaluatedSets sets;  // on rank 0
  *result->mutable_final() = EvaluateAndReport(t, "at the end", &sets);
  if (!result->epochs().empty() && t.config.eval().curve_train_samples() == 0) {
    *result->mutable_epochs()->rbegin()->mutable_metrics() = result->final();
  }
  if (events) {
    AddMetrics(*events, result->global_steps(), result->final(), t.config.eval());
    events->Flush();
  }
  if (comm::Rank() == 0) SaveEvaluatedModel(t, sets);
  WaitForRankZero(t.config);  // the others' wait for the final evaluation is bounded too
  result->set_peak_rss_mib(PeakRssMib());
  result->set_train_seconds(train_seconds);
  result->set_images_per_second(result->global_steps() * t.config.batch_size() / std::max(train_seconds, 1e-9));
}

// A run paused at a step (TrainOptions.pause_at_fraction, after its checkpoint): the full evaluation there, as
// `final`, by which a sweep decides whether it goes on. --resume continues from the checkpoint, which the
// evaluation has not touched.
void PauseResult(Run& t, int64_t step, RunResult* result) {
  *result->mutable_final() = EvaluateAndReport(t, "at the pause, step " + std::to_string(step) + " of " +
                                                     std::to_string(t.total_steps));
  WaitForRankZero(t.config);
  result->set_status(RunResult::PAUSED);
}

RunResult TrainAndEvaluate(const RunConfig& config, const TrainOptions& options, ResultFile& file) {
  const Clock::time_point run_start = Clock::now();
  at::set_num_threads(ThreadsPerRank(config));
  InstallStopHandlers();  // before the set-up, which can take minutes (common/stop.h)
  if (comm::Rank() == 0) LogConfig(config);
  Run t = Setup(config);
  TrainingState state = Restore(t, options);
  std::unique_ptr<EventWriter> events;
  if (comm::Rank() == 0) events = std::make_unique<EventWriter>(config.out_dir());
  RunResult& result = state.result;
  const double wall_before = result.wall_seconds();  // of the attempts before a resume
  StartResult(t, state.step, &result, file);

  t.learner.encoder->train();
  EpochLog epochs(t, result, events.get());
  ProgressLog progress(t, events.get(), [&epochs] { return epochs.evaluation_seconds(); });
  switch (TrainSteps(t, state, PauseStep(options.pause_at_fraction, t.total_steps), {&progress, &epochs}, file)) {
    case StepsEnd::kFinished:
      FinishResult(t, epochs.train_seconds(), events.get(), &result);
      result.set_status(RunResult::FINISHED);
      break;
    case StepsEnd::kStopped:
      if (comm::Rank() == 0) LOG(WARNING) << "stopped by a signal at global step " << state.step << "; checkpointed";
      result.set_status(RunResult::INTERRUPTED);
      break;
    case StepsEnd::kPaused:
      PauseResult(t, state.step, &result);
      break;
  }
  if (t.train.streamed()) {  // images replaced because they could not be read (data.skip_bad_images)
    const auto bad = static_cast<double>(t.train.files->bad.load() + t.test.files->bad.load());
    result.set_bad_images(result.bad_images() + static_cast<int64_t>(comm::AllReduceSum(bad)));
  }
  result.set_wall_seconds(wall_before + SecondsSince(run_start));
  file.Write(result);
  // A stopped run exits 143 on every rank, and mpirun kills the other ranks a second or two after the first non-zero
  // exit: no rank leaves before rank 0 has written its checkpoint and result.
  if (result.status() == RunResult::INTERRUPTED) WaitForRankZero(t.config);
  return result;
}

}  // namespace

RunResult Train(const RunConfig& config, const TrainOptions& options) {
  comm::SetCollectiveTimeout(config.collective_timeout_seconds() > 0 ? config.collective_timeout_seconds()
                                                                     : comm::kDefaultCollectiveTimeoutSeconds);
  ResultFile file(config);
  try {
    return TrainAndEvaluate(config, options, file);
  } catch (const StoppedBySignal& e) {  // before the first step: nothing to checkpoint, the last checkpoint stays
    if (comm::Rank() == 0) LOG(WARNING) << e.what() << "; the run ends INTERRUPTED before its first step";
    file.Interrupted(config);
    RunResult interrupted;
    interrupted.set_status(RunResult::INTERRUPTED);
    return interrupted;
  } catch (const std::exception& e) {
    // Rank 0 records the failure (a non-finite loss, an error of its own) before the error reaches main.
    file.Fail(e.what());
    throw;
  }
}

void TuneAllocator() {
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace tempered
