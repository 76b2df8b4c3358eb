#include "launch/report/report.h"

#include <google/protobuf/text_format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <tuple>

#include "common/config.h"
#include "launch/sweep/sweep_spec.h"
#include "launch/sweep/sweep_state.h"

namespace tempered {

namespace pb = google::protobuf;

constexpr double kNaN = kNoValue;

std::string ConfigFieldText(const RunConfig& message, const std::string& path) {
  const pb::Message* m = &message;
  std::string rest = path;
  for (size_t dot; (dot = rest.find('.')) != std::string::npos; rest = rest.substr(dot + 1)) {
    const pb::FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(rest.substr(0, dot));
    if (f == nullptr || f->type() != pb::FieldDescriptor::TYPE_MESSAGE || f->is_repeated()) return "";
    m = &m->GetReflection()->GetMessage(*m, f);
  }
  const pb::FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(rest);
  if (f == nullptr) return "";
  std::string out;
  const int n = f->is_repeated() ? m->GetReflection()->FieldSize(*m, f) : 1;
  for (int i = 0; i < n; ++i) {
    std::string value;
    pb::TextFormat::PrintFieldValueToString(*m, f, f->is_repeated() ? i : -1, &value);
    if (value.size() >= 2 && value.front() == '"') value = value.substr(1, value.size() - 2);
    out += (i ? "," : "") + value;
  }
  return out;
}

namespace {

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string Number(double v, const char* format = "%.6g") {
  if (std::isnan(v)) return "";
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

bool HasLinearEval(const RunRecord& r) { return r.config.eval().linear_epochs() > 0; }

struct MeasureInfo {
  const char* name;  // for text
  const char* key;   // for files and columns
};
constexpr MeasureInfo kMeasures[kMeasureCount] = {
    {"kNN top-1", "knn_top1"},   {"linear top-1", "linear_top1"}, {"uniformity", "uniformity"},
    {"alignment", "alignment"}, {"tolerance", "tolerance"},       {"positive similarity", "positive_similarity"},
    {"gap", "gap"}};

// The (kNN bank, kNN queries, metric samples) an evaluation used.
std::tuple<int, int, int> SampleOf(const Metrics& m) {
  return {m.knn_train_samples(), m.knn_test_samples(), m.metric_samples()};
}

}  // namespace

bool ValueLess(const std::string& a, const std::string& b) {
  char *end_a = nullptr, *end_b = nullptr;
  const double x = std::strtod(a.c_str(), &end_a), y = std::strtod(b.c_str(), &end_b);
  if (!a.empty() && !b.empty() && *end_a == '\0' && *end_b == '\0' && x != y) return x < y;
  return a < b;
}

bool LossUsesField(LossConfig::Name loss, const std::string& path) {
  if (path.rfind("loss.tau", 0) == 0) return LossUsesTau(loss);  // loss.tau, loss.tau_mode and its parameters
  if (path == "loss.hard_k") return LossUsesHardK(loss);
  return true;
}

const char* MeasureName(Measure m) { return kMeasures[static_cast<int>(m)].name; }
const char* MeasureKey(Measure m) { return kMeasures[static_cast<int>(m)].key; }

double MeasureOf(const Metrics& metrics, Measure m) {
  switch (m) {
    case Measure::kKnn: return metrics.knn_top1();
    // 0 is "not evaluated": the classifier never scores 0% on a balanced test split (chance is 1 / classes).
    case Measure::kLinear: return metrics.linear_top1() > 0 ? metrics.linear_top1() : kNaN;
    case Measure::kUniformity: return metrics.uniformity();
    case Measure::kAlignment: return metrics.alignment();
    case Measure::kTolerance: return metrics.tolerance();
    case Measure::kPositiveSimilarity: return metrics.positive_similarity();
    case Measure::kGap: {
      const int k = std::min(10, metrics.top_negative_similarity_size());
      if (k == 0) return kNaN;
      const auto& top = metrics.top_negative_similarity();
      return metrics.positive_similarity() - std::accumulate(top.begin(), top.begin() + k, 0.0) / k;
    }
  }
  return kNaN;
}

std::vector<std::pair<int, double>> CurvePoints(const RunResult& result, Measure m) {
  std::vector<std::tuple<int, double, std::tuple<int, int, int>>> all;  // (epoch, value, sample)
  std::map<std::tuple<int, int, int>, int> count;
  for (const EpochResult& e : result.epochs()) {
    const double value = e.has_metrics() ? MeasureOf(e.metrics(), m) : kNaN;
    if (std::isnan(value)) continue;
    all.emplace_back(e.epoch(), value, SampleOf(e.metrics()));
    ++count[SampleOf(e.metrics())];
  }
  std::tuple<int, int, int> common;
  int most = 0;
  for (const auto& [epoch, value, sample] : all) {
    if (count[sample] > most) most = count[sample], common = sample;  // ties: the first seen
  }
  std::vector<std::pair<int, double>> points;
  for (const auto& [epoch, value, sample] : all) {
    if (sample == common) points.emplace_back(epoch, value);
  }
  return points;
}

Trend TrendOf(const RunResult& result, Measure m) {
  const std::vector<std::pair<int, double>> points = CurvePoints(result, m);
  Trend t;
  t.evaluated_epochs = static_cast<int>(points.size());
  if (points.size() < 2) return t;
  const size_t window = std::max<size_t>(2, (points.size() + 2) / 3);  // max(2, ceil(E / 3))
  const auto first = points.end() - window;
  double mx = 0, my = 0;
  for (auto p = first; p != points.end(); ++p) mx += p->first, my += p->second;
  mx /= window;
  my /= window;
  double sxy = 0, sxx = 0;
  for (auto p = first; p != points.end(); ++p) {
    sxy += (p->first - mx) * (p->second - my);
    sxx += (p->first - mx) * (p->first - mx);
  }
  t.first_epoch = first->first;
  t.last_epoch = points.back().first;
  t.slope = sxx > 0 ? sxy / sxx : kNaN;
  return t;
}

Stat StatOf(const std::vector<double>& values) {
  Stat s;
  double sum = 0;
  for (double v : values) {
    if (!std::isnan(v)) ++s.n, sum += v;
  }
  if (s.n == 0) return s;
  s.mean = sum / s.n;
  if (s.n < 2) return s;
  double squares = 0;
  for (double v : values) {
    if (!std::isnan(v)) squares += (v - s.mean) * (v - s.mean);
  }
  s.std = std::sqrt(squares / (s.n - 1));
  return s;
}

std::vector<RunRecord> CollectRecords(const std::string& sweep_dir, const std::vector<SweepState::Run>& runs) {
  std::vector<RunRecord> records;
  for (const auto& run : runs) {
    RunRecord r;
    r.id = run.id();
    r.run_dir = run.run_dir();
    r.name = r.run_dir.substr(r.run_dir.rfind('/') + 1);
    r.state = SweepState::Run::State_Name(run.state());
    std::transform(r.state.begin(), r.state.end(), r.state.begin(), ::tolower);
    r.attempts = run.attempts();
    r.last_error = run.last_error();
    r.config = run.config();
    r.rung_scores.assign(run.rung_scores().begin(), run.rung_scores().end());
    const bool read = ReadRunResult(sweep_dir + "/" + run.run_dir(), &r.result);  // a paused run's too
    r.has_result = read && r.result.status() == RunResult::FINISHED;
    r.steps_done = r.result.global_steps();
    r.total_steps = r.result.total_steps();
    records.push_back(std::move(r));
  }
  return records;
}

namespace {

const char* const kNumericColumns[] = {
    "knn_top1",          "linear_top1",      "uniformity",      "alignment",     "tolerance",
    "penalty_entropy",   "positive_similarity", "images_per_second", "global_steps", "wall_seconds",
    "evaluated_epochs",  "uniformity_slope", "tolerance_slope", "knn_top1_slope"};

// A run's values of kNumericColumns (all NaN without a result); *_slope: TrendOf, per epoch.
std::vector<double> NumericColumns(const RunRecord& r) {
  if (!r.has_result) return std::vector<double>(std::size(kNumericColumns), kNaN);
  const Metrics& m = r.result.final();
  const Trend uniformity = TrendOf(r.result, Measure::kUniformity);
  return {m.knn_top1(),
          HasLinearEval(r) ? m.linear_top1() : kNaN,
          m.uniformity(),
          m.alignment(),
          m.tolerance(),
          m.penalty_entropy(),
          m.positive_similarity(),
          r.result.images_per_second(),
          static_cast<double>(r.result.global_steps()),
          r.result.wall_seconds(),
          static_cast<double>(uniformity.evaluated_epochs),
          uniformity.slope,
          TrendOf(r.result, Measure::kTolerance).slope,
          TrendOf(r.result, Measure::kKnn).slope};
}

}  // namespace

std::string ResultsCsv(const std::vector<RunRecord>& records, const SweepSpec& spec) {
  std::vector<std::string> header = {"id", "loss", "tau", "hard_k", "seed"};
  for (const auto& axis : spec.axis()) header.push_back(axis.field());
  header.push_back("status");
  header.push_back("attempts");
  header.insert(header.end(), std::begin(kNumericColumns), std::end(kNumericColumns));
  header.push_back("run_dir");
  header.push_back("error");
  std::ostringstream out;
  for (size_t i = 0; i < header.size(); ++i) out << (i ? "," : "") << CsvField(header[i]);
  out << "\n";
  for (const RunRecord& r : records) {
    std::vector<std::string> row = {r.id, LossName(r.config.loss().name()), FormatFloat(r.config.loss().tau()),
                                    std::to_string(r.config.loss().hard_k()), std::to_string(r.config.seed())};
    for (const auto& axis : spec.axis()) row.push_back(ConfigFieldText(r.config, axis.field()));
    row.push_back(r.state);
    row.push_back(std::to_string(r.attempts));
    for (double v : NumericColumns(r)) row.push_back(Number(v));
    row.push_back(r.run_dir);
    row.push_back(r.last_error);
    for (size_t i = 0; i < row.size(); ++i) out << (i ? "," : "") << CsvField(row[i]);
    out << "\n";
  }
  return out.str();
}

std::string ResultsJson(const std::vector<RunRecord>& records) {
  nlohmann::json runs = nlohmann::json::array();
  for (const RunRecord& r : records) {
    nlohmann::json j = {{"id", r.id},           {"run_dir", r.run_dir},       {"state", r.state},
                        {"attempts", r.attempts}, {"last_error", r.last_error}, {"result", nullptr}};
    if (r.has_result) j["result"] = nlohmann::json::parse(ToJson(r.result));
    runs.push_back(std::move(j));
  }
  return nlohmann::json{{"runs", runs}}.dump(2) + "\n";
}

namespace {

const LossConfig::Name kLossOrder[] = {LossConfig::INFONCE, LossConfig::HARD, LossConfig::SIMPLE,
                                       LossConfig::HARD_SIMPLE, LossConfig::NEAREST};

int LossOrder(LossConfig::Name loss) {
  return static_cast<int>(std::find(std::begin(kLossOrder), std::end(kLossOrder), loss) - std::begin(kLossOrder));
}

// A field that may split cells: its name in the report and its path in RunConfig.
struct GroupField {
  std::string label, path;
};


// The fields besides loss, tau and seed whose values differ between the finished runs that use them: hard_k and the
// spec's generic axes (ExpandGrid varies nothing else).
std::vector<GroupField> VaryingFields(const std::vector<RunRecord>& records, const SweepSpec& spec) {
  std::vector<GroupField> candidates = {{"hard_k", "loss.hard_k"}};
  for (const auto& axis : spec.axis()) candidates.push_back({axis.field(), axis.field()});
  std::vector<GroupField> varying;
  for (const GroupField& f : candidates) {
    std::set<std::string> values;
    for (const RunRecord& r : records) {
      if (!r.has_result || !LossUsesField(r.config.loss().name(), f.path)) continue;
      values.insert(ConfigFieldText(r.config, f.path));
    }
    if (values.size() > 1) varying.push_back(f);
  }
  return varying;
}


bool CellLess(const Cell& a, const Cell& b) {
  if (a.loss != b.loss) return LossOrder(a.loss) < LossOrder(b.loss);
  for (size_t i = 0; i < std::min(a.group.size(), b.group.size()); ++i) {
    if (a.group[i].second != b.group[i].second) return ValueLess(a.group[i].second, b.group[i].second);
  }
  return a.tau < b.tau;  // NaN (no tau) only meets NaN: one cell per group
}

// What a cell collects from its runs before they are reduced to means.
struct CellSamples {
  Cell cell;
  std::array<std::vector<double>, kMeasureCount> final, initial;  // by Measure, one value per run
  std::vector<double> raw_pixel_knn;
  std::vector<std::vector<double>> top_negative;                  // by rank, one value per run
  std::map<int, std::array<std::vector<double>, kMeasureCount>> curve;
  std::vector<double> final_tau;
  std::map<int, std::vector<double>> tau_curve;
};

void AddRun(const RunRecord& r, CellSamples* s) {
  const RunResult& result = r.result;
  CellRun member;
  member.seed = r.config.seed();
  for (int m = 0; m < kMeasureCount; ++m) {
    const Measure measure = static_cast<Measure>(m);
    s->final[m].push_back(MeasureOf(result.final(), measure));
    if (result.has_initial()) s->initial[m].push_back(MeasureOf(result.initial(), measure));
    for (const auto& [epoch, value] : CurvePoints(result, measure)) s->curve[epoch][m].push_back(value);
    member.trend[m] = TrendOf(result, measure);
  }
  if (r.config.eval().raw_pixel_knn()) s->raw_pixel_knn.push_back(result.raw_pixel_knn_top1());
  const auto& top = result.final().top_negative_similarity();
  if (s->top_negative.size() < static_cast<size_t>(top.size())) s->top_negative.resize(top.size());
  for (int k = 0; k < top.size(); ++k) s->top_negative[k].push_back(top[k]);
  // The tau per epoch (a result from before tau was recorded has 0 there: its constant tau).
  const auto tau_of = [&](const EpochResult& e) { return e.tau() > 0 ? e.tau() : r.config.loss().tau(); };
  for (const EpochResult& e : result.epochs()) s->tau_curve[e.epoch()].push_back(tau_of(e));
  if (!result.epochs().empty()) s->final_tau.push_back(tau_of(*result.epochs().rbegin()));
  const int test_samples = result.final().knn_test_samples();
  if (s->cell.runs == 0 || test_samples < s->cell.test_samples) s->cell.test_samples = test_samples;
  ++s->cell.runs;
  s->cell.members.push_back(member);
}

Cell Reduce(CellSamples& s) {
  Cell c = std::move(s.cell);
  for (int m = 0; m < kMeasureCount; ++m) {
    c.stat[m] = StatOf(s.final[m]);
    c.initial[m] = StatOf(s.initial[m]);
  }
  c.raw_pixel_knn = StatOf(s.raw_pixel_knn);
  for (const auto& values : s.top_negative) c.top_negative.push_back(StatOf(values).mean);
  for (const auto& [epoch, values] : s.curve) {
    for (int m = 0; m < kMeasureCount; ++m) c.curve[epoch][m] = StatOf(values[m]).mean;
  }
  c.final_tau = StatOf(s.final_tau);
  for (const auto& [epoch, values] : s.tau_curve) c.tau_curve[epoch] = StatOf(values).mean;
  return c;
}

}  // namespace

std::vector<Cell> GroupCells(const std::vector<RunRecord>& records, const SweepSpec& spec) {
  const std::vector<GroupField> varying = VaryingFields(records, spec);
  std::vector<CellSamples> cells;
  for (const RunRecord& r : records) {
    if (!r.has_result) continue;
    Cell key;
    key.loss = r.config.loss().name();
    key.tau = LossUsesTau(key.loss) ? std::stod(FormatFloat(r.config.loss().tau())) : kNaN;
    for (const GroupField& f : varying) {
      if (LossUsesField(key.loss, f.path)) key.group.emplace_back(f.label, ConfigFieldText(r.config, f.path));
    }
    auto same = [&](const CellSamples& s) {
      return s.cell.loss == key.loss && s.cell.group == key.group &&
             (s.cell.tau == key.tau || (std::isnan(s.cell.tau) && std::isnan(key.tau)));
    };
    auto it = std::find_if(cells.begin(), cells.end(), same);
    if (it == cells.end()) it = cells.insert(cells.end(), CellSamples{key, {}, {}, {}, {}, {}, {}, {}});
    AddRun(r, &*it);
  }
  std::vector<Cell> out;
  for (CellSamples& s : cells) out.push_back(Reduce(s));
  std::sort(out.begin(), out.end(), CellLess);
  return out;
}

std::string GroupLabel(const std::vector<std::pair<std::string, std::string>>& group) {
  std::string s;
  for (const auto& [field, value] : group) s += (s.empty() ? "" : ", ") + field + "=" + value;
  return s;
}

std::string CellLabel(const Cell& c) {
  std::string label = LossName(c.loss);
  if (LossUsesTau(c.loss)) label = (c.loss == LossConfig::INFONCE ? "" : label + " ") + "τ=" + FormatFloat(c.tau);
  return c.group.empty() ? label : label + " (" + GroupLabel(c.group) + ")";
}
}  // namespace tempered
