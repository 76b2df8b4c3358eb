#include "common/config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/errors.h"

namespace tempered {

namespace pb = google::protobuf;

RunConfig DefaultRunConfig() {
  RunConfig c;
  auto* data = c.mutable_data();
  data->set_dataset("fashion_mnist");
  data->set_crop_scale_min(0.2f);
  data->set_crop_scale_max(1.0f);
  data->set_color_jitter(0.4f);
  data->set_grayscale_prob(0.2f);
  data->set_flip_prob(0.5f);
  auto* model = c.mutable_model();
  model->set_arch(ModelConfig::SMALL_CNN);
  model->set_norm(ModelConfig::BATCH);
  model->set_head(ModelConfig::LINEAR);
  model->set_embed_dim(128);
  auto* loss = c.mutable_loss();
  loss->set_name(LossConfig::INFONCE);
  loss->set_tau(0.2f);
  loss->set_hard_fraction(0.08f);
  loss->set_negatives(LossConfig::BATCH);
  loss->set_bank_momentum(0.5f);
  auto* optim = c.mutable_optim();
  optim->set_lr(0.06f);
  optim->set_momentum(0.9f);
  optim->set_weight_decay(5e-4f);
  optim->set_schedule(OptimConfig::COSINE);
  optim->set_warmup_epochs(0.0f);
  optim->set_decay_factor(0.1f);
  auto* eval = c.mutable_eval();
  eval->set_knn_k(200);
  eval->set_knn_temperature(0.07f);
  eval->set_metric_samples(2000);
  eval->set_linear_epochs(10);
  eval->set_curve_train_samples(5000);
  eval->set_linear_lr(0.1f);
  c.set_epochs(1);
  c.set_batch_size(256);
  c.set_seed(1);
  c.set_out_dir("tempered-run");
  c.set_log_every_steps(20);
  c.set_device("cpu");
  return c;
}

namespace {

// A field is "set" when it differs from its proto3 zero value or, for `optional` fields, was assigned.
bool IsSet(const pb::Message& m, const pb::FieldDescriptor* f) {
  const pb::Reflection* r = m.GetReflection();
  if (f->is_repeated()) return r->FieldSize(m, f) > 0;
  // proto3: a plain scalar "has" its field when non-zero; an `optional` one when it was assigned, even 0.
  return r->HasField(m, f);
}

// Copies every field of `defaults` that is unset in `target`, recursing into messages.
void FillUnset(const pb::Message& defaults, pb::Message* target) {
  const pb::Descriptor* d = target->GetDescriptor();
  const pb::Reflection* r = target->GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->type() == pb::FieldDescriptor::TYPE_MESSAGE && !f->is_repeated()) {
      FillUnset(defaults.GetReflection()->GetMessage(defaults, f), r->MutableMessage(target, f));
    } else if (!IsSet(*target, f) && IsSet(defaults, f)) {
      if (f->is_repeated()) {
        for (int j = 0; j < defaults.GetReflection()->FieldSize(defaults, f); ++j) {
          // Repeated scalars only appear in configs (decay_epochs): copy via the text form.
          std::string text;
          pb::TextFormat::PrintFieldValueToString(defaults, f, j, &text);
          pb::TextFormat::ParseFieldValueFromString(text, f, target);
        }
      } else {
        std::string text;
        pb::TextFormat::PrintFieldValueToString(defaults, f, -1, &text);
        pb::TextFormat::ParseFieldValueFromString(text, f, target);
      }
    }
  }
}

// Collects protobuf parse errors with their line and column.
class ErrorCollector : public pb::io::ErrorCollector {
 public:
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (first_.empty()) first_ = "line " + std::to_string(line + 1) + ": " + message;
  }
  void AddWarning(int, pb::io::ColumnNumber, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string first_;
};

template <typename T>
void Require(bool ok, const std::string& field, const std::string& expectation, T value) {
  if (!ok) {
    std::ostringstream os;
    os << field << " must be " << expectation << ", got " << value;
    throw InvalidFieldError(os.str(), field);
  }
}

// Every float field of `m` (recursively) must be finite: inf passes most range checks (lr > 0) and NaN none but
// the ones written with a negation; neither makes sense anywhere in a config.
void RequireFinite(const pb::Message& m, const std::string& prefix) {
  const pb::Reflection* r = m.GetReflection();
  for (int i = 0; i < m.GetDescriptor()->field_count(); ++i) {
    const pb::FieldDescriptor* f = m.GetDescriptor()->field(i);
    const std::string name = prefix + f->name();
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated()) {
      if (r->HasField(m, f)) RequireFinite(r->GetMessage(m, f), name + ".");
    } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_FLOAT && !f->is_repeated()) {
      Require(std::isfinite(r->GetFloat(m, f)), name, "finite", r->GetFloat(m, f));
    } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE && !f->is_repeated()) {
      Require(std::isfinite(r->GetDouble(m, f)), name, "finite", r->GetDouble(m, f));
    }
  }
}

}  // namespace

bool LossUsesTau(LossConfig::Name name) { return name == LossConfig::INFONCE || name == LossConfig::HARD; }

RunConfig ResolveConfig(const RunConfig& config) {
  RunConfig resolved = config;
  FillUnset(DefaultRunConfig(), &resolved);
  if (!resolved.data().has_prefetch_steps()) {  // its default depends on the device
    resolved.mutable_data()->set_prefetch_steps(resolved.device() == "cuda" ? 1 : 0);
  }
  return resolved;
}

void ValidateConfig(const RunConfig& c) {
  RequireFinite(c, "");
  Require(c.loss().tau() > 0 && std::isfinite(c.loss().tau()), "loss.tau", "> 0", c.loss().tau());
  Require(c.loss().hard_k() >= 0, "loss.hard_k", ">= 0", c.loss().hard_k());
  Require(c.loss().tau_min() >= 0, "loss.tau_min", ">= 0 (0 = the mode's default)", c.loss().tau_min());
  Require(c.loss().tau_max() == 0 || c.loss().tau_max() > c.loss().tau_min(), "loss.tau_max",
          "> loss.tau_min (0 = the mode's default)", c.loss().tau_max());
  Require(c.loss().tau_period_epochs() >= 0, "loss.tau_period_epochs", ">= 0 (0 = the run's length)",
          c.loss().tau_period_epochs());
  Require(c.loss().tau_alpha() >= 0, "loss.tau_alpha", ">= 0 (0 = 0.5)", c.loss().tau_alpha());
  Require(c.loss().hard_fraction() > 0 && c.loss().hard_fraction() <= 1, "loss.hard_fraction", "in (0, 1]",
          c.loss().hard_fraction());
  Require(c.loss().bank_momentum() >= 0 && c.loss().bank_momentum() < 1, "loss.bank_momentum", "in [0, 1)",
          c.loss().bank_momentum());
  Require(c.batch_size() >= 2, "batch_size", ">= 2 (the global batch)", c.batch_size());
  Require(c.epochs() >= 1, "epochs", ">= 1", c.epochs());
  Require(c.max_steps() >= 0, "max_steps", ">= 0", c.max_steps());
  Require(c.threads() >= 0, "threads", ">= 0", c.threads());
  Require(c.log_every_steps() >= 1, "log_every_steps", ">= 1", c.log_every_steps());
  Require(c.collective_timeout_seconds() >= 0, "collective_timeout_seconds", ">= 0 (0 = 600)",
          c.collective_timeout_seconds());
  Require(c.eval_timeout_seconds() >= 0, "eval_timeout_seconds", ">= 0 (0 = 86400)", c.eval_timeout_seconds());
  Require(c.gradient_bucket_kib() >= 0 && c.gradient_bucket_kib() <= (1 << 20), "gradient_bucket_kib",
          "in [0, 1048576] (0 = 256)", c.gradient_bucket_kib());
  Require(c.host_sync_every_steps() >= 0, "host_sync_every_steps", ">= 0 (0 = 1 on cpu, 10 on cuda)",
          c.host_sync_every_steps());
  Require(c.model().embed_dim() >= 1, "model.embed_dim", ">= 1", c.model().embed_dim());
  Require(c.model().width() >= 0, "model.width", ">= 0", c.model().width());
  Require(c.optim().lr() > 0, "optim.lr", "> 0", c.optim().lr());
  Require(c.optim().momentum() >= 0 && c.optim().momentum() < 1, "optim.momentum", "in [0, 1)",
          c.optim().momentum());
  Require(c.optim().weight_decay() >= 0, "optim.weight_decay", ">= 0", c.optim().weight_decay());
  Require(c.optim().warmup_epochs() >= 0, "optim.warmup_epochs", ">= 0", c.optim().warmup_epochs());
  const auto& d = c.data();
  Require(d.train_subset() >= 0, "data.train_subset", ">= 0", d.train_subset());
  Require(d.test_subset() >= 0, "data.test_subset", ">= 0", d.test_subset());
  Require(d.image_size() >= 0 && d.image_size() <= 4096, "data.image_size", "in [0, 4096] (0 = the data set's own)",
          d.image_size());
  Require(d.eval_crop_fraction() >= 0 && d.eval_crop_fraction() <= 1, "data.eval_crop_fraction",
          "in (0, 1] (0 = the data set's default)", d.eval_crop_fraction());
  Require(d.prefetch_steps() >= 0 && d.prefetch_steps() <= 2, "data.prefetch_steps", "0, 1 or 2",
          d.prefetch_steps());
  Require(d.crop_scale_min() > 0 && d.crop_scale_min() <= d.crop_scale_max() && d.crop_scale_max() <= 1,
          "data.crop_scale_min/max", "0 < min <= max <= 1", std::to_string(d.crop_scale_min()) + ".." +
          std::to_string(d.crop_scale_max()));
  Require(d.color_jitter() >= 0 && d.color_jitter() <= 1, "data.color_jitter", "in [0, 1]", d.color_jitter());
  Require(d.flip_prob() >= 0 && d.flip_prob() <= 1, "data.flip_prob", "in [0, 1]", d.flip_prob());
  Require(d.grayscale_prob() >= 0 && d.grayscale_prob() <= 1, "data.grayscale_prob", "in [0, 1]",
          d.grayscale_prob());
  const auto& e = c.eval();
  Require(e.knn_k() >= 1, "eval.knn_k", ">= 1", e.knn_k());
  Require(e.knn_temperature() > 0, "eval.knn_temperature", "> 0", e.knn_temperature());
  Require(e.metric_samples() >= 2, "eval.metric_samples", ">= 2", e.metric_samples());
  Require(e.every_epochs() >= 0, "eval.every_epochs", ">= 0", e.every_epochs());
  Require(e.linear_epochs() >= 0, "eval.linear_epochs", ">= 0", e.linear_epochs());
  Require(e.curve_train_samples() >= 0, "eval.curve_train_samples", ">= 0", e.curve_train_samples());
  Require(!c.out_dir().empty(), "out_dir", "a directory", "an empty path");
  Require(c.device() == "cpu" || c.device() == "cuda", "device", "cpu or cuda", c.device());
}

namespace {

// Walks the fields a file set (`tree`) in `m`: records their lines, and refuses an explicit zero in a field without
// presence where `defaults` (the matching part of DefaultRunConfig(), or null outside a RunConfig) is not zero.
void CheckFieldsSet(const std::string& file, const pb::Message& m, const pb::TextFormat::ParseInfoTree& tree,
                    const pb::Message* defaults, const std::string& prefix, FieldLines* lines) {
  static const RunConfig kDefaults = DefaultRunConfig();
  const pb::Reflection* r = m.GetReflection();
  for (int i = 0; i < m.GetDescriptor()->field_count(); ++i) {
    const pb::FieldDescriptor* f = m.GetDescriptor()->field(i);
    const std::string name = prefix + f->name();
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      const pb::TextFormat::ParseInfoTree* nested = f->is_repeated() ? nullptr : tree.GetTreeForNested(f, -1);
      if (nested == nullptr) continue;
      const pb::Message* nested_defaults = defaults != nullptr ? &defaults->GetReflection()->GetMessage(*defaults, f)
                                           : f->message_type() == RunConfig::descriptor() ? &kDefaults
                                                                                           : nullptr;
      CheckFieldsSet(file, r->GetMessage(m, f), *nested, nested_defaults, name + ".", lines);
      continue;
    }
    const int line = tree.GetLocation(f, f->is_repeated() ? 0 : -1).line;
    if (line < 0) continue;  // not in the file
    if (lines != nullptr) (*lines)[name] = line + 1;
    if (f->is_repeated() || f->has_presence() || r->HasField(m, f) || defaults == nullptr ||
        !IsSet(*defaults, f)) {
      continue;
    }
    std::string value, default_value;
    pb::TextFormat::PrintFieldValueToString(m, f, -1, &value);
    pb::TextFormat::PrintFieldValueToString(*defaults, f, -1, &default_value);
    throw UserError(file + " line " + std::to_string(line + 1) + ": invalid value " + value + " for " + name +
                    ": it reads as unset, which takes the default " + default_value +
                    " (leave the field out for the default)");
  }
}

}  // namespace

void ReadTextProto(const std::string& path, pb::Message* message, FieldLines* lines) {
  const std::string text = ReadWholeFile(path, "config file");
  ErrorCollector errors;
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  pb::TextFormat::ParseInfoTree tree;
  parser.WriteLocationsTo(&tree);
  if (!parser.ParseFromString(text, message)) {
    throw UserError("cannot parse " + path + " as a " + message->GetDescriptor()->name() + ": " + errors.first());
  }
  static const RunConfig kDefaults = DefaultRunConfig();
  CheckFieldsSet(path, *message, tree, message->GetDescriptor() == RunConfig::descriptor() ? &kDefaults : nullptr,
                 "", lines);
}

RunConfig ReadRunConfig(const std::string& path, FieldLines* lines) {
  RunConfig config;
  ReadTextProto(path, &config, lines);
  return config;
}

const std::vector<std::string>& ResultIndependentFields() {
  // In: where files go, how the work is spread over threads and sent between ranks, and when the host reads it. The
  // views are a pure function of (seed, epoch, index), so workers and prefetching do not change them; gradient buckets hold the same
  // sums (more than 2 ranks may add them in another order: a last-bit rounding accepted for a tuning knob);
  // checkpoints and the stalled-rank timeouts do not touch the computation.
  // Out, on purpose: `device` (CPU and GPU kernels round differently, so a result names the device it came from,
  // and a resume across devices would splice two roundings into one run), `bf16`, and every `eval` and
  // data.test_subset setting but eval.save_embeddings (another file written at the end): they change the reported
  // metrics, and a checkpoint carries the per-epoch curve evaluated under them.
  static const std::vector<std::string> fields = {
      "out_dir", "threads", "log_every_steps", "checkpoint_every_steps", "collective_timeout_seconds",
      "eval_timeout_seconds", "gradient_bucket_kib", "host_sync_every_steps", "data.workers", "data.prefetch_steps",
      "eval.save_embeddings"};
  return fields;
}

void StripResultIndependentFields(RunConfig* config) {
  for (const std::string& path : ResultIndependentFields()) {
    pb::Message* m = config;
    size_t begin = 0;
    for (size_t dot; m && (dot = path.find('.', begin)) != std::string::npos; begin = dot + 1) {
      const pb::FieldDescriptor* parent = m->GetDescriptor()->FindFieldByName(path.substr(begin, dot - begin));
      m = m->GetReflection()->HasField(*m, parent) ? m->GetReflection()->MutableMessage(m, parent) : nullptr;
    }
    if (m) m->GetReflection()->ClearField(m, m->GetDescriptor()->FindFieldByName(path.substr(begin)));
  }
}

namespace {

// The field of DefaultRunConfig() at `path`'s parent, for a leaf `f`: whether the default sets it, and its text.
bool DefaultIsSet(const std::string& path, const pb::FieldDescriptor* f, std::string* text) {
  static const RunConfig defaults = DefaultRunConfig();
  const pb::Message* m = &defaults;
  for (size_t begin = 0, dot; (dot = path.find('.', begin)) != std::string::npos; begin = dot + 1) {
    m = &m->GetReflection()->GetMessage(*m, m->GetDescriptor()->FindFieldByName(path.substr(begin, dot - begin)));
  }
  if (!IsSet(*m, f)) return false;
  pb::TextFormat::PrintFieldValueToString(*m, f, -1, text);
  return true;
}

// The message that holds the last field of `path` ("a.b.c": message a.b, field c) and that field's descriptor.
pb::Message* FieldAtPath(pb::Message* message, const std::string& path, const pb::FieldDescriptor** field) {
  pb::Message* m = message;
  for (std::string rest = path;;) {
    const size_t dot = rest.find('.');
    const std::string name = rest.substr(0, dot);
    const pb::FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(name);
    if (f == nullptr) throw UserError("unknown config field '" + path + "' (no field '" + name + "' in " +
                                      m->GetDescriptor()->name() + ")");
    if (dot == std::string::npos) {
      if (f->type() == pb::FieldDescriptor::TYPE_MESSAGE) {
        throw UserError("config field '" + path + "' is a message; set one of its fields instead");
      }
      *field = f;
      return m;
    }
    if (f->type() != pb::FieldDescriptor::TYPE_MESSAGE || f->is_repeated()) {
      throw UserError("config field '" + path + "': '" + name + "' is not a message");
    }
    m = m->GetReflection()->MutableMessage(m, f);
    rest = rest.substr(dot + 1);
  }
}

// What a value of field f looks like, for the error of one that does not parse.
std::string ExpectedValue(const pb::FieldDescriptor* f) {
  if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_ENUM) return f->cpp_type_name();
  std::string expected = "one of";
  for (int i = 1; i < f->enum_type()->value_count(); ++i) {
    std::string v = f->enum_type()->value(i)->name();
    std::transform(v.begin(), v.end(), v.begin(), ::tolower);
    expected += (i > 1 ? ", " : " ") + v;
  }
  return expected;
}

// Sets (or, repeated, appends) one value of field f of m from its flag text: enums in any case, strings as given.
bool ParseFieldValue(std::string item, const pb::FieldDescriptor* f, pb::Message* m) {
  if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
    std::transform(item.begin(), item.end(), item.begin(), ::toupper);
  } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
    item = "\"" + pb::CEscape(item) + "\"";
  }
  // A parser that reports to nobody: the static TextFormat function logs a libprotobuf ERROR line of its own.
  ErrorCollector ignored;
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&ignored);
  return !item.empty() && parser.ParseFieldValueFromString(item, f, m);
}

}  // namespace

void SetFieldByPath(pb::Message* message, const std::string& path, const std::string& value) {
  const pb::FieldDescriptor* f = nullptr;
  pb::Message* m = FieldAtPath(message, path, &f);
  std::vector<std::string> items;
  if (f->is_repeated()) {
    m->GetReflection()->ClearField(m, f);
    std::stringstream ss(value);
    for (std::string item; std::getline(ss, item, ',');) items.push_back(item);
  } else {
    items.push_back(value);
  }
  for (const std::string& item : items) {
    if (!ParseFieldValue(item, f, m)) {
      throw UserError("invalid value '" + value + "' for " + path + ": expected " + ExpectedValue(f));
    }
  }
  // proto3: a zero in a field without presence cannot be told from an unset one, and ResolveConfig would replace
  // it with the default (--batch_size 0 would train with 256). Where the default is not zero, refuse it here.
  std::string default_text;
  if (!f->is_repeated() && !f->has_presence() && !m->GetReflection()->HasField(*m, f) &&
      message->GetDescriptor() == RunConfig::descriptor() && DefaultIsSet(path, f, &default_text)) {
    throw UserError("invalid value '" + value + "' for " + path + ": it reads as unset, which takes the default " +
                    default_text);
  }
}

std::string ToJson(const pb::Message& message) {
  pb::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status = pb::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) throw std::runtime_error("cannot convert to JSON: " + status.ToString());
  return json;
}

void FromJson(const std::string& json, pb::Message* message, const std::string& what) {
  pb::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto status = pb::util::JsonStringToMessage(json, message, options);
  if (!status.ok()) throw UserError("cannot parse " + what + " as JSON: " + status.ToString());
}

}  // namespace tempered
