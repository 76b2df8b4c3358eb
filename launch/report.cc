#include "launch/report.h"

#include <google/protobuf/text_format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>

#include "launch/sweep_spec.h"
#include "launch/sweep_state.h"
#include "trainer/config.h"

namespace tempered {

namespace pb = google::protobuf;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The text form of the field at `path` ("optim.lr") of `message`; repeated values joined by commas.
std::string FieldText(const pb::Message& message, const std::string& path) {
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

const LossConfig::Name kLossOrder[] = {LossConfig::INFONCE, LossConfig::HARD, LossConfig::SIMPLE,
                                       LossConfig::HARD_SIMPLE, LossConfig::NEAREST};

}  // namespace

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
    r.has_result = ReadRunResult(sweep_dir + "/" + run.run_dir(), &r.result) &&
                   r.result.status() == RunResult::FINISHED;
    records.push_back(std::move(r));
  }
  return records;
}

std::string ResultsCsv(const std::vector<RunRecord>& records, const SweepSpec& spec) {
  std::vector<std::string> header = {"id", "loss", "tau", "hard_k", "seed"};
  for (const auto& axis : spec.axis()) header.push_back(axis.field());
  for (const char* c : {"status", "attempts", "knn_top1", "linear_top1", "uniformity", "alignment", "tolerance",
                        "penalty_entropy", "positive_similarity", "images_per_second", "global_steps",
                        "wall_seconds", "run_dir", "error"}) {
    header.push_back(c);
  }
  std::ostringstream out;
  for (size_t i = 0; i < header.size(); ++i) out << (i ? "," : "") << CsvField(header[i]);
  out << "\n";
  for (const RunRecord& r : records) {
    const Metrics& m = r.result.final();
    const bool ok = r.has_result;
    std::vector<std::string> row = {r.id, LossName(r.config.loss().name()), FormatFloat(r.config.loss().tau()),
                                    std::to_string(r.config.loss().hard_k()), std::to_string(r.config.seed())};
    for (const auto& axis : spec.axis()) row.push_back(FieldText(r.config, axis.field()));
    const std::vector<double> values = {
        ok ? m.knn_top1() : kNaN,        ok && HasLinearEval(r) ? m.linear_top1() : kNaN,
        ok ? m.uniformity() : kNaN,      ok ? m.alignment() : kNaN,
        ok ? m.tolerance() : kNaN,       ok ? m.penalty_entropy() : kNaN,
        ok ? m.positive_similarity() : kNaN, ok ? r.result.images_per_second() : kNaN,
        ok ? static_cast<double>(r.result.global_steps()) : kNaN, ok ? r.result.wall_seconds() : kNaN};
    row.push_back(r.state);
    row.push_back(std::to_string(r.attempts));
    for (double v : values) row.push_back(Number(v));
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

std::vector<Cell> MeanByLossAndTau(const std::vector<RunRecord>& records) {
  // Key: (position of the loss in kLossOrder, tau or -1 for a loss without tau).
  std::map<std::pair<int, double>, Cell> cells;
  for (const RunRecord& r : records) {
    if (!r.has_result) continue;
    const LossConfig::Name loss = r.config.loss().name();
    const int order = static_cast<int>(std::find(std::begin(kLossOrder), std::end(kLossOrder), loss) -
                                       std::begin(kLossOrder));
    const double tau = LossUsesTau(loss) ? std::stod(FormatFloat(r.config.loss().tau())) : kNaN;
    Cell& c = cells[{order, std::isnan(tau) ? -1.0 : tau}];
    const Metrics& m = r.result.final();
    c.loss = loss;
    c.tau = tau;
    ++c.runs;
    c.knn += m.knn_top1();
    c.linear += HasLinearEval(r) ? m.linear_top1() : kNaN;  // one run without linear eval makes the mean NaN
    c.uniformity += m.uniformity();
    c.alignment += m.alignment();
    c.tolerance += m.tolerance();
  }
  std::vector<Cell> out;
  for (auto& [key, c] : cells) {
    for (double* v : {&c.knn, &c.linear, &c.uniformity, &c.alignment, &c.tolerance}) *v /= c.runs;
    out.push_back(c);
  }
  return out;
}

}  // namespace tempered
