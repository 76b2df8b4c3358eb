// The sweep in TensorBoard's HParams tab: one experiment in the sweep directory (the sweep's axes as hparams, the
// final metrics that tempered-train writes as eval/* scalars), and in each run directory the session's start (its
// axis values, its group = its cell, so the seeds of a cell are aggregated) and, once it ended, its end. Rewritten
// with the report, each in one file of a fixed name, so that a resumed sweep replaces rather than repeats them.
#include <cmath>
#include <cstdlib>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/config.h"
#include "common/event_file.h"
#include "launch/report/report.h"
#include "launch/sweep/sweep_spec.h"
#include "proto/tensorboard_hparams.pb.h"

namespace tempered {
namespace {

namespace hp = tensorboard::hparams;

constexpr char kFileName[] = "events.out.tfevents.0.hparams";

// One hparam: a config field and the name the HParams tab shows.
struct Axis {
  std::string name, path;
};

std::vector<Axis> AxesOf(const SweepSpec& spec) {
  std::vector<Axis> axes;
  if (spec.loss_size() > 1) axes.push_back({"loss", "loss.name"});
  if (spec.tau_size() > 0) axes.push_back({"tau", "loss.tau"});
  if (spec.hard_k_size() > 0) axes.push_back({"hard_k", "loss.hard_k"});
  if (spec.seed_size() > 1) axes.push_back({"seed", "seed"});
  for (const auto& axis : spec.axis()) axes.push_back({axis.field(), axis.field()});
  return axes;
}

bool IsNumber(const std::string& text) {
  char* end = nullptr;
  std::strtod(text.c_str(), &end);
  return !text.empty() && end != nullptr && *end == '\0';
}

google::protobuf::Value ValueOf(const std::string& text) {
  google::protobuf::Value value;
  if (IsNumber(text)) {
    value.set_number_value(std::strtod(text.c_str(), nullptr));
  } else {
    value.set_string_value(text);
  }
  return value;
}

// The run's value of an axis as the report shows it ("infonce", "0.1", "LEARNABLE").
std::string AxisText(const RunConfig& config, const Axis& axis) {
  if (axis.path == "loss.name") return LossName(config.loss().name());
  if (axis.path == "loss.tau") return FormatFloat(config.loss().tau());
  return ConfigFieldText(config, axis.path);
}

hp::HParamInfo InfoOf(const Axis& axis, const std::vector<RunRecord>& records) {
  std::set<std::string> values;
  for (const RunRecord& r : records) values.insert(AxisText(r.config, axis));
  hp::HParamInfo info;
  info.set_name(axis.name);
  bool numbers = true;
  for (const std::string& v : values) numbers = numbers && IsNumber(v);
  info.set_type(numbers ? hp::DATA_TYPE_FLOAT64 : hp::DATA_TYPE_STRING);
  for (const std::string& v : values) *info.mutable_domain_discrete()->add_values() = ValueOf(v);
  return info;
}

// dir/kFileName holding `records`: (tag, plugin data) pairs, each a Summary.Value of the hparams plugin.
void WritePluginData(const std::string& dir,
                     const std::vector<std::pair<std::string, hp::HParamsPluginData>>& records) {
  EventWriter writer(dir, kFileName);
  for (const auto& [tag, data] : records) {
    tensorboard::Summary::Value value;
    value.set_tag(tag);
    auto* plugin = value.mutable_metadata()->mutable_plugin_data();
    plugin->set_plugin_name("hparams");
    plugin->set_content(data.SerializeAsString());
    // A scalar float tensor, as TensorBoard's own hparams summaries carry: its data loader keeps plugin summaries
    // as tensors.
    value.mutable_tensor()->set_dtype(1);  // DT_FLOAT
    value.mutable_tensor()->add_float_val(0);
    writer.AddValue(0, value);
  }
  writer.Flush();
}

void WriteExperiment(const std::string& sweep_dir, const std::vector<Axis>& axes,
                     const std::vector<RunRecord>& records) {
  hp::HParamsPluginData data;
  hp::Experiment* experiment = data.mutable_experiment();
  for (const Axis& axis : axes) *experiment->add_hparam_infos() = InfoOf(axis, records);
  for (const char* metric : {"knn_top1", "linear_top1", "uniformity", "tolerance"}) {
    hp::MetricInfo* info = experiment->add_metric_infos();
    info->mutable_name()->set_tag(std::string("eval/") + metric);
    info->set_display_name(metric);
    info->set_dataset_type(hp::DATASET_VALIDATION);
  }
  WritePluginData(sweep_dir, {{"_hparams_/experiment", data}});
}

void WriteSession(const std::string& sweep_dir, const std::vector<Axis>& axes, const RunRecord& r) {
  hp::HParamsPluginData start;
  std::string group;
  for (const Axis& axis : axes) {
    const std::string text = AxisText(r.config, axis);
    (*start.mutable_session_start_info()->mutable_hparams())[axis.name] = ValueOf(text);
    if (axis.name != "seed") group += (group.empty() ? "" : ",") + axis.name + "=" + text;
  }
  start.mutable_session_start_info()->set_group_name(group);
  std::vector<std::pair<std::string, hp::HParamsPluginData>> records = {{"_hparams_/session_start_info", start}};
  if (r.state == "finished" || r.state == "failed") {
    hp::HParamsPluginData end;
    end.mutable_session_end_info()->set_status(r.state == "finished" ? hp::STATUS_SUCCESS : hp::STATUS_FAILURE);
    records.emplace_back("_hparams_/session_end_info", end);
  }
  WritePluginData(sweep_dir + "/" + r.run_dir, records);
}

}  // namespace

void WriteHParams(const std::string& sweep_dir, const SweepSpec& spec, const std::vector<RunRecord>& records) {
  const std::vector<Axis> axes = AxesOf(spec);
  WriteExperiment(sweep_dir, axes, records);
  for (const RunRecord& r : records) {
    if (r.state == "pending") continue;  // not started: no run directory of its own yet
    WriteSession(sweep_dir, axes, r);
  }
}

}  // namespace tempered
