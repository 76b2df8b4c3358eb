// The checklist of docs/paper.md §7 claims 3-9 on a sweep's cells. Short CPU runs can test directions, not the paper's
// absolute numbers, so every check compares within the sweep and prints the numbers it used, with their spread
// over seeds and how many runs stand behind them. A claim that would disagree while a run behind it is still
// moving is "not converged": a short run is not evidence against the paper.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>

#include "launch/report/report.h"
#include "launch/sweep/sweep_spec.h"

namespace tempered {

namespace {

constexpr double kNaN = kNoValue;
// Thresholds written into the evidence of each verdict.
constexpr double kMonotoneRho = 0.5;           // |Spearman rho| for "falls / rises as tau grows"
constexpr double kFarWorsePoints = 2.0;        // accuracy points for "far worse" and "roughly matches"
constexpr double kFarLessUniform = 0.5;        // uniformity units for "far less uniform"
constexpr double kFlatFraction = 0.5;          // hard's uniformity range vs infonce's for "nearly constant"
constexpr double kNothingUsefulPoints = 10.0;  // nearest at least this far below the best infonce ...
constexpr double kNearInitPoints = 2.0;        // ... or at most this far above its own random-init accuracy
// Still moving: |least-squares slope per epoch| over the last third of a run's curve (TrendOf) above these. About
// a tenth of the differences the claims compare (infonce's uniformity spans ~0.9 over tau, tolerance ~0.3).
constexpr double kStillMovingUniformity = 0.03;
constexpr double kStillMovingTolerance = 0.01;
constexpr double kStillMovingAlignment = 0.01;
constexpr double kStillMovingSimilarity = 0.01;  // positive similarity and the Fig 8 gap
constexpr double kStillMovingAccuracyPoints = 0.5;

const char* kAgrees = "agrees";
const char* kDisagrees = "disagrees";
const char* kNotConverged = "not converged";
const char* kNotEnough = "not enough data";
const char* kWithinNoise = "within noise";

std::string F(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

// "3.000 ± 0.050" over two or more seeds, "3.000" for one.
std::string Value(const Cell& c, Measure m, const char* format) {
  const Stat& s = c[m];
  return F(format, s.mean) + (s.n >= 2 ? " ± " + F(format, s.std) : "");
}

std::vector<Cell> Of(const std::vector<Cell>& cells, LossConfig::Name loss) {
  std::vector<Cell> out;
  for (const Cell& c : cells) {
    if (c.loss == loss) out.push_back(c);
  }
  return out;  // tau ascending (GroupCells' order within one group)
}

// The accuracy the claims use: linear top-1 where every cell has it (the paper's metric), kNN otherwise.
struct Accuracy {
  Measure measure = Measure::kLinear;
  double operator()(const Cell& c) const { return c.mean(measure); }
  const char* name() const { return MeasureName(measure); }
};

std::string Series(const std::vector<Cell>& cells, Measure m, const char* format) {
  std::string s;
  for (const Cell& c : cells) s += (s.empty() ? "" : ", ") + FormatFloat(c.tau) + ": " + Value(c, m, format);
  return s;
}

const Cell* Best(const std::vector<Cell>& cells, const Accuracy& acc) {
  const Cell* best = nullptr;
  for (const Cell& c : cells) {
    if (best == nullptr || acc(c) > acc(*best)) best = &c;
  }
  return best;
}

const Cell* AtTau(const std::vector<Cell>& cells, double tau) {
  for (const Cell& c : cells) {
    if (FormatFloat(c.tau) == FormatFloat(tau)) return &c;
  }
  return nullptr;
}

// A verdict before the convergence check: the check, and the cells and measures it compared.
struct Judgement {
  ClaimCheck check;
  std::vector<Cell> compared;
  std::vector<Measure> measures;
};

Judgement NotEnough(const std::string& claim, const std::string& needs) { return {{claim, kNotEnough, needs}, {}, {}}; }

Judgement Verdict(const std::string& claim, bool agrees, const std::string& evidence, std::vector<Cell> compared,
                  std::vector<Measure> measures) {
  return {{claim, agrees ? kAgrees : kDisagrees, evidence}, std::move(compared), std::move(measures)};
}

enum class TauRange { kAll, kPapers };

// docs/paper.md §7.3: roughly monotone over tau in [0.1, 0.8], flat or noisy at the extremes. kPapers uses that range
// when the sweep has >= 3 temperatures in it, and all of the sweep's temperatures otherwise.
Judgement Monotone(const std::string& claim, const std::vector<Cell>& cells, Measure m, double sign,
                   TauRange range) {
  std::vector<Cell> all, used;
  for (const Cell& c : cells) {
    if (!std::isnan(c.mean(m))) all.push_back(c);  // runs from before local separation have no gap
  }
  if (all.size() < 3) {
    return NotEnough(claim, std::string("needs infonce with ") + MeasureName(m) + " at >= 3 temperatures");
  }
  for (const Cell& c : all) {
    if (range == TauRange::kAll || (c.tau >= 0.1 - 1e-6 && c.tau <= 0.8 + 1e-6)) used.push_back(c);
  }
  if (used.size() < 3) used = all;
  std::vector<double> tau, y;
  for (const Cell& c : used) {
    tau.push_back(c.tau);
    y.push_back(c.mean(m));
  }
  const double rho = SpearmanRho(tau, y);
  const std::string metric = MeasureName(m);
  if (std::isnan(rho)) return Verdict(claim, false, metric + " is the same at every tau", used, {m});
  return Verdict(claim, sign * rho >= kMonotoneRho,
                 "Spearman rho(tau, " + metric + ") = " + F("%+.2f", rho) + " over tau " + Series(used, m, "%.3f") +
                     "; agrees when rho " + (sign > 0 ? ">= +" : "<= -") + F("%.1f", kMonotoneRho),
                 used, {m});
}

Judgement ReverseU(const std::vector<Cell>& infonce, const Accuracy& acc) {
  const std::string claim = "4. infonce: accuracy is reverse-U in tau (peak inside the tau range)";
  if (infonce.size() < 3) return NotEnough(claim, "needs infonce at >= 3 temperatures");
  const Cell* best = Best(infonce, acc);
  const bool inside = best != &infonce.front() && best != &infonce.back();
  std::string evidence = std::string(acc.name()) + " peaks at tau = " + FormatFloat(best->tau) + " (" +
                         Value(*best, acc.measure, "%.2f") + "%), " + (inside ? "inside" : "at the edge of") +
                         " tau " + FormatFloat(infonce.front().tau) + ".." + FormatFloat(infonce.back().tau);
  if (acc.measure == Measure::kLinear) {
    const Cell* best_knn = Best(infonce, Accuracy{Measure::kKnn});
    evidence += "; kNN peaks at tau = " + FormatFloat(best_knn->tau) +
                (best_knn->tau <= best->tau ? " (not above the linear peak, as in the paper)"
                                            : " (above the linear peak, unlike the paper)");
  }
  return Verdict(claim, inside, evidence, infonce, {acc.measure});
}

double MostUniform(const std::vector<Cell>& cells) {
  double most = -1e9;
  for (const Cell& c : cells) most = std::max(most, c.mean(Measure::kUniformity));
  return most;
}

std::vector<Cell> Joined(std::vector<Cell> a, const std::vector<Cell>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Judgement SimpleFarWorse(const std::vector<Cell>& cells, const Accuracy& acc) {
  const std::string claim = "5. simple is far worse than the best infonce and far less uniform";
  const auto simple = Of(cells, LossConfig::SIMPLE), infonce = Of(cells, LossConfig::INFONCE);
  if (simple.empty() || infonce.empty()) return NotEnough(claim, "needs simple and infonce runs");
  const Cell* best = Best(infonce, acc);
  const double most_uniform = MostUniform(infonce);
  const Cell& s = simple.front();
  const double uniformity = s.mean(Measure::kUniformity);
  const bool agrees = acc(s) <= acc(*best) - kFarWorsePoints && uniformity <= most_uniform - kFarLessUniform;
  return Verdict(claim, agrees,
                 std::string(acc.name()) + " simple " + Value(s, acc.measure, "%.2f") + "% vs best infonce " +
                     Value(*best, acc.measure, "%.2f") + "% (tau " + FormatFloat(best->tau) + "); uniformity simple " +
                     Value(s, Measure::kUniformity, "%.3f") + " vs most uniform infonce " + F("%.3f", most_uniform) +
                     "; agrees when >= " + F("%.0f", kFarWorsePoints) + " points worse and >= " +
                     F("%.1f", kFarLessUniform) + " less uniform",
                 Joined(simple, infonce), {acc.measure, Measure::kUniformity});
}

Judgement HardSimpleMatches(const std::vector<Cell>& cells, const Accuracy& acc) {
  const std::string claim = "6. hard_simple roughly matches the best infonce";
  const auto hs = Of(cells, LossConfig::HARD_SIMPLE), infonce = Of(cells, LossConfig::INFONCE);
  if (hs.empty() || infonce.empty()) return NotEnough(claim, "needs hard_simple and infonce runs");
  const Cell* best = Best(infonce, acc);
  return Verdict(claim, acc(hs.front()) >= acc(*best) - kFarWorsePoints,
                 std::string(acc.name()) + " hard_simple " + Value(hs.front(), acc.measure, "%.2f") +
                     "% vs best infonce " + Value(*best, acc.measure, "%.2f") + "% (tau " + FormatFloat(best->tau) +
                     "); agrees when at most " + F("%.0f", kFarWorsePoints) + " points below",
                 Joined(hs, infonce), {acc.measure});
}

double Range(const std::vector<Cell>& cells) {
  double lo = 1e9, hi = -1e9;
  for (const Cell& c : cells) {
    lo = std::min(lo, c.mean(Measure::kUniformity));
    hi = std::max(hi, c.mean(Measure::kUniformity));
  }
  return hi - lo;
}

// Claims 7a and 7b are the paper's over the temperatures it trained hard at (Table 1: 0.07, 0.3, 0.7, 1): its
// "range 0.03 vs 0.9" is over those. The cells with tau in [0.07, 1] when there are >= 2, all of them otherwise;
// a smaller tau (0.05: the locality of docs/paper.md §3 at its extreme, the slowest run to converge) is claim 9's.
// Both tau ascending.
std::vector<Cell> ByTau(std::vector<Cell> cells) {
  std::sort(cells.begin(), cells.end(), [](const Cell& a, const Cell& b) { return a.tau < b.tau; });
  return cells;
}

std::vector<Cell> InPapersHardTaus(const std::vector<Cell>& cells) {
  std::vector<Cell> in;
  for (const Cell& c : cells) {
    if (c.tau >= 0.07 - 1e-6 && c.tau <= 1.0 + 1e-6) in.push_back(c);
  }
  return ByTau(in.size() >= 2 ? in : cells);
}

std::string TauSpan(const std::vector<Cell>& by_tau) {
  return "tau " + FormatFloat(by_tau.front().tau) + "-" + FormatFloat(by_tau.back().tau);
}

Judgement HardFlatUniformity(const std::vector<Cell>& all_hard_cells, const std::vector<Cell>& all_infonce_cells) {
  const std::string claim = "7a. hard: uniformity nearly constant across tau (unlike infonce)";
  const std::vector<Cell> all_hard = ByTau(all_hard_cells), all_infonce = ByTau(all_infonce_cells);
  const std::vector<Cell> hard = InPapersHardTaus(all_hard), infonce = InPapersHardTaus(all_infonce);
  if (hard.size() < 2 || infonce.size() < 2) return NotEnough(claim, "needs hard and infonce at >= 2 taus");
  const double rh = Range(hard), ri = Range(infonce);
  std::string evidence = "uniformity range over " + TauSpan(hard) + ": hard " + F("%.3f", rh) + ", infonce " +
                         F("%.3f", ri) + " (paper, tau 0.07-1: 0.03 vs 0.9)";
  if (hard.size() < all_hard.size() || infonce.size() < all_infonce.size()) {
    evidence += "; over every tau (" + TauSpan(all_hard) + "): hard " + F("%.3f", Range(all_hard)) + ", infonce " +
                F("%.3f", Range(all_infonce));
  }
  return Verdict(claim, rh <= kFlatFraction * ri,
                 evidence + "; agrees when hard's is <= " + F("%.1f", kFlatFraction) + " x infonce's",
                 Joined(hard, infonce), {Measure::kUniformity});
}

// "tau 0.3: 0.120 vs 0.300" for each hard cell with an infonce cell at its tau; counts those below.
std::string ToleranceVersus(const std::vector<Cell>& hard, const std::vector<Cell>& infonce,
                            std::vector<Cell>* compared, int* below) {
  std::string evidence;
  for (const Cell& h : hard) {
    const Cell* i = AtTau(infonce, h.tau);
    if (i == nullptr) continue;
    if (compared) compared->insert(compared->end(), {h, *i});
    if (below) *below += h.mean(Measure::kTolerance) < i->mean(Measure::kTolerance);
    evidence += (evidence.empty() ? "" : ", ") + std::string("tau ") + FormatFloat(h.tau) + ": " +
                Value(h, Measure::kTolerance, "%.3f") + " vs " + Value(*i, Measure::kTolerance, "%.3f");
  }
  return evidence;
}

Judgement HardLowerTolerance(const std::vector<Cell>& all_hard, const std::vector<Cell>& infonce) {
  const std::string claim = "7b. hard: tolerance below infonce's at every tau";
  if (all_hard.empty()) return NotEnough(claim, "needs hard and infonce at a common tau");
  const std::vector<Cell> hard = InPapersHardTaus(all_hard);
  std::vector<Cell> compared, smaller;
  int below = 0;
  std::string evidence = ToleranceVersus(hard, infonce, &compared, &below);
  const int pairs = static_cast<int>(compared.size() / 2);
  if (pairs == 0) return NotEnough(claim, "needs hard and infonce at a common tau");
  evidence += " (" + std::to_string(below) + " of " + std::to_string(pairs) + " below)";
  for (const Cell& h : all_hard) {
    if (h.tau < hard.front().tau - 1e-6) smaller.push_back(h);
  }
  const std::string shown = ToleranceVersus(smaller, infonce, nullptr, nullptr);
  if (!shown.empty()) evidence += "; below Table 1's taus, shown, not judged: " + shown;
  return Verdict(claim, below == pairs, "tolerance hard vs infonce: " + evidence, compared, {Measure::kTolerance});
}

// The cell closest to `target` among those with tau in [lo, hi].
const Cell* Closest(const std::vector<Cell>& cells, double target, double lo, double hi) {
  const Cell* best = nullptr;
  for (const Cell& c : cells) {
    if (c.tau < lo || c.tau > hi) continue;
    if (best == nullptr || std::fabs(c.tau - target) < std::fabs(best->tau - target)) best = &c;
  }
  return best;
}

// "hard (tau 0.7) 81.20% vs infonce (tau 0.07) 79.00%"
std::string Versus(const Cell& a, const Cell& b, const Accuracy& acc) {
  return std::string(acc.name()) + " " + LossName(a.loss) + " (tau " + FormatFloat(a.tau) + ") " +
         Value(a, acc.measure, "%.2f") + "% vs " + LossName(b.loss) + " (tau " + FormatFloat(b.tau) + ") " +
         Value(b, acc.measure, "%.2f") + "%";
}

// The claim that `first` is above (first_above) or below `second` in accuracy, "within noise" when the difference
// is under kWithinNoiseErrors standard errors: one seed on 2,000 test images cannot tell 88.65% from 88.75%.
Judgement Ordered(const std::string& claim, const Cell& first, const Cell& second, bool first_above,
                  const Accuracy& acc) {
  const double difference = acc(first) - acc(second);
  const double error = std::hypot(AccuracyError(first, acc.measure), AccuracyError(second, acc.measure));
  const int images = std::min(first.test_samples, second.test_samples);
  const bool seeds = first[acc.measure].n >= 2 && second[acc.measure].n >= 2;
  std::string evidence = Versus(first, second, acc) + " (difference " + F("%+.2f", difference);
  if (error > 0) {
    evidence += " ± " + F("%.2f", error) + " points, the standard error of " +
                (images > 0 ? "the test set's " + std::to_string(images) + " images" : std::string()) +
                (images > 0 && seeds ? " and " : "") + (seeds ? "the seeds' spread" : "") + ")";
  } else {
    evidence += " points; its error is unknown: one seed, no test-set size)";
  }
  Judgement j = Verdict(claim, first_above ? difference > 0 : difference < 0, evidence, {first, second}, {acc.measure});
  if (error > 0 && std::fabs(difference) < kWithinNoiseErrors * error) {
    j.check.verdict = kWithinNoise;
    j.check.evidence += "; within noise: the difference is under " + F("%.0f", kWithinNoiseErrors) + " standard errors";
  }
  return j;
}

// The paper compares hard at tau = 0.7 with infonce at 0.07; a sweep uses its closest temperatures, within ranges
// that keep the comparison's meaning (a large tau for hard, a small one for infonce).
Judgement HardLargeTauBeatsInfonceSmall(const std::vector<Cell>& hard, const std::vector<Cell>& infonce,
                                        const Accuracy& acc) {
  const std::string claim = "7c. hard at tau ~ 0.7 beats infonce at tau ~ 0.07";
  const Cell* h = Closest(hard, 0.7, 0.4, 1.0);
  const Cell* i = Closest(infonce, 0.07, 0.03, 0.1);
  if (h == nullptr || i == nullptr) return NotEnough(claim, "needs hard at tau in [0.4, 1] and infonce in [0.03, 0.1]");
  return Ordered(claim, *h, *i, /*first_above=*/true, acc);
}

Judgement VerySmallTauWorse(const std::vector<Cell>& infonce, const Accuracy& acc) {
  const std::string claim = "9a. infonce at tau = 0.05 is worse than at tau = 0.07";
  const Cell* small = AtTau(infonce, 0.05);
  const Cell* paper = AtTau(infonce, 0.07);
  if (small == nullptr || paper == nullptr) return NotEnough(claim, "needs infonce at tau = 0.05 and 0.07");
  return Ordered(claim, *small, *paper, /*first_above=*/false, acc);
}

// docs/paper.md §2: nearest (the tau -> 0 limit) "learns nothing useful": far below the best infonce, or no better than
// learning nothing: its own random encoder (eval.at_init, the same accuracy) or, without one, kNN on raw pixels
// (eval.raw_pixel_knn, against nearest's kNN). Either suffices: on an easy data set untrained features are already
// strong (Fashion-MNIST: 79.7% linear top-1 at initialisation, 74.6-79.1% raw-pixel kNN on 12,000-60,000 images),
// so "far below" alone would call a run that learnt nothing useful a disagreement. The trends behind the verdict are the two compared cells'.
Judgement NearestLearnsNothing(const std::vector<Cell>& cells, const Accuracy& acc) {
  const std::string claim = "9b. nearest learns nothing useful";
  const auto nearest = Of(cells, LossConfig::NEAREST), infonce = Of(cells, LossConfig::INFONCE);
  if (nearest.empty() || infonce.empty()) return NotEnough(claim, "needs nearest and infonce runs");
  const Cell& n = nearest.front();
  const Cell* best = Best(infonce, acc);
  const Stat& init = n.initial[static_cast<int>(acc.measure)];
  const bool far_below = acc(n) <= acc(*best) - kNothingUsefulPoints;
  std::string evidence = std::string(acc.name()) + " nearest " + Value(n, acc.measure, "%.2f") + "% vs best infonce " +
                         Value(*best, acc.measure, "%.2f") + "% (tau " + FormatFloat(best->tau) + ")";
  bool near_nothing = false;
  if (init.n > 0) {
    near_nothing = acc(n) <= init.mean + kNearInitPoints;
    evidence += "; nearest at initialisation " + F("%.2f", init.mean) + "%";
  } else if (n.raw_pixel_knn.n > 0) {
    near_nothing = n.mean(Measure::kKnn) <= n.raw_pixel_knn.mean + kNearInitPoints;
    evidence += "; kNN top-1 nearest " + F("%.2f", n.mean(Measure::kKnn)) + "% vs raw pixels " +
                F("%.2f", n.raw_pixel_knn.mean) + "%";
  } else {
    evidence += "; no at-init or raw-pixel evaluation to compare with (eval.at_init, eval.raw_pixel_knn)";
  }
  evidence += "; agrees when >= " + F("%.0f", kNothingUsefulPoints) + " points below the best infonce or <= " +
              F("%.0f", kNearInitPoints) + " points above learning nothing (random init, else raw pixels)";
  return Verdict(claim, far_below || near_nothing, evidence, {n, *best}, {acc.measure});
}

std::vector<double> Ranks(const std::vector<double>& v) {
  std::vector<size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> rank(v.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    for (size_t k = i; k <= j; ++k) rank[order[k]] = (i + j) / 2.0 + 1;  // ties share their average rank
    i = j + 1;
  }
  return rank;
}

// ---- Convergence: turning a "disagrees" measured on a moving run into "not converged" ----

// Linear top-1 is measured only at full evaluations (usually just the last epoch), so where a run's curve has fewer
// than 2 of them its kNN curve stands in: the same frozen features, evaluated every epoch.
Measure CurveMeasure(const CellRun& run, Measure m) {
  return m == Measure::kLinear && run.trend[static_cast<int>(m)].evaluated_epochs < 2 ? Measure::kKnn : m;
}

// The run that moved most (|slope| against its threshold) on one of the claim's measures; unknown convergence:
// the fewest evaluated epochs among the runs with under 2.
struct Convergence {
  const Cell* cell = nullptr;
  const CellRun* run = nullptr;
  Measure measure = Measure::kKnn;
  double excess = 1;  // |slope| / threshold of the fastest-moving run; > 1 is still moving
  int fewest_epochs = 2;
};

Convergence ConvergenceOf(const Judgement& j) {
  Convergence c;
  for (const Cell& cell : j.compared) {
    for (const CellRun& run : cell.members) {
      for (Measure asked : j.measures) {
        const Measure m = CurveMeasure(run, asked);
        const Trend& t = run.trend[static_cast<int>(m)];
        c.fewest_epochs = std::min(c.fewest_epochs, t.evaluated_epochs);
        const double excess = std::fabs(t.slope) / StillMovingPerEpoch(m);
        if (t.evaluated_epochs >= 2 && excess > c.excess) c = {&cell, &run, m, excess, c.fewest_epochs};
      }
    }
  }
  return c;
}

// "infonce τ=0.05 (seed 1) uniformity still rising +0.210/epoch over epochs 6-8 (moving above 0.03/epoch)"
std::string Moving(const Convergence& c) {
  const Trend& t = c.run->trend[static_cast<int>(c.measure)];
  return CellLabel(*c.cell) + " (seed " + std::to_string(c.run->seed) + ") " + MeasureName(c.measure) + " still " +
         (t.slope > 0 ? "rising " : "falling ") + F("%+.3g", t.slope) + "/epoch over epochs " +
         std::to_string(t.first_epoch) + "-" + std::to_string(t.last_epoch) + " (moving above " +
         F("%g", StillMovingPerEpoch(c.measure)) + "/epoch)";
}

std::string RunsPerCell(const std::vector<Cell>& cells) {
  int lo = 1 << 30, hi = 0;
  for (const Cell& c : cells) lo = std::min(lo, c.runs), hi = std::max(hi, c.runs);
  return "n = " + (lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi)) + " run(s) per cell";
}

ClaimCheck Finish(const Judgement& j) {
  ClaimCheck check = j.check;
  if (j.compared.empty()) return check;
  const Convergence c = ConvergenceOf(j);
  if (check.verdict == kDisagrees && c.run != nullptr) {
    check.verdict = kNotConverged;
    check.evidence += "; not converged: " + Moving(c);
  } else if (check.verdict == kWithinNoise && c.run != nullptr) {
    check.evidence += "; still moving: " + Moving(c);
  }
  if (c.fewest_epochs < 2) {
    check.evidence += "; convergence unknown: " + std::to_string(c.fewest_epochs) + " evaluated epoch" +
                      (c.fewest_epochs == 1 ? "" : "s");
  }
  check.evidence += "; " + RunsPerCell(j.compared);
  return check;
}

// ---- Groups: a sweep that varies hard_k or a generic axis ----

using Group = std::vector<std::pair<std::string, std::string>>;

// A cell belongs to a context when it agrees with it on every field both name (infonce, which ignores hard_k, is
// compared with hard at each hard_k).
bool InContext(const Cell& c, const Group& context) {
  for (const auto& [field, value] : c.group) {
    for (const auto& [cf, cv] : context) {
      if (field == cf && value != cv) return false;
    }
  }
  return true;
}

struct ClaimInput {
  std::vector<Cell> all, infonce, hard;
  Accuracy acc;
};

struct ClaimRule {
  std::vector<LossConfig::Name> losses;  // the losses it compares: their group fields split it
  std::function<Judgement(const ClaimInput&)> judge;
};

const std::vector<ClaimRule>& Rules() {
  const auto I = LossConfig::INFONCE, H = LossConfig::HARD;
  static const std::vector<ClaimRule> rules = {
      {{I}, [](const ClaimInput& in) { return Monotone("3a. infonce: uniformity falls as tau grows", in.infonce,
                                                       Measure::kUniformity, -1, TauRange::kPapers); }},
      {{I}, [](const ClaimInput& in) { return Monotone("3b. infonce: tolerance rises as tau grows", in.infonce,
                                                       Measure::kTolerance, +1, TauRange::kPapers); }},
      {{I}, [](const ClaimInput& in) { return ReverseU(in.infonce, in.acc); }},
      {{I, LossConfig::SIMPLE}, [](const ClaimInput& in) { return SimpleFarWorse(in.all, in.acc); }},
      {{I, LossConfig::HARD_SIMPLE}, [](const ClaimInput& in) { return HardSimpleMatches(in.all, in.acc); }},
      {{I, H}, [](const ClaimInput& in) { return HardFlatUniformity(in.hard, in.infonce); }},
      {{I, H}, [](const ClaimInput& in) { return HardLowerTolerance(in.hard, in.infonce); }},
      {{I, H}, [](const ClaimInput& in) { return HardLargeTauBeatsInfonceSmall(in.hard, in.infonce, in.acc); }},
      // Fig 8 shows the whole tau range: the small-tau end is where the gap is supposed to be largest.
      {{I}, [](const ClaimInput& in) {
         return Monotone("8. infonce: the gap between the positive and the top-10 negative similarities grows as "
                         "tau falls", in.infonce, Measure::kGap, -1, TauRange::kAll); }},
      {{I}, [](const ClaimInput& in) { return VerySmallTauWorse(in.infonce, in.acc); }},
      {{I, LossConfig::NEAREST}, [](const ClaimInput& in) { return NearestLearnsNothing(in.all, in.acc); }},
  };
  return rules;
}

// The contexts a rule is checked in: the distinct groups of its losses' cells that name every field any of them
// names. A researcher varying hard_k wants each hard_k checked on its own, not an average that no run trained.
std::vector<Group> ContextsOf(const ClaimRule& rule, const std::vector<Cell>& cells) {
  size_t widest = 0;
  for (const Cell& c : cells) {
    if (std::count(rule.losses.begin(), rule.losses.end(), c.loss)) widest = std::max(widest, c.group.size());
  }
  std::vector<Group> contexts;
  for (const Cell& c : cells) {
    if (!std::count(rule.losses.begin(), rule.losses.end(), c.loss) || c.group.size() != widest) continue;
    if (std::find(contexts.begin(), contexts.end(), c.group) == contexts.end()) contexts.push_back(c.group);
  }
  if (contexts.empty()) contexts.emplace_back();  // no cells: one "not enough data"
  return contexts;
}

ClaimInput InputFor(const std::vector<Cell>& cells, const Group& context) {
  ClaimInput in;
  for (const Cell& c : cells) {
    if (InContext(c, context)) in.all.push_back(c);
  }
  in.infonce = Of(in.all, LossConfig::INFONCE);
  in.hard = Of(in.all, LossConfig::HARD);
  for (const Cell& c : in.all) {
    if (std::isnan(c.mean(Measure::kLinear))) in.acc.measure = Measure::kKnn;
  }
  return in;
}

}  // namespace

double StillMovingPerEpoch(Measure m) {
  switch (m) {
    case Measure::kKnn:
    case Measure::kLinear: return kStillMovingAccuracyPoints;
    case Measure::kUniformity: return kStillMovingUniformity;
    case Measure::kAlignment: return kStillMovingAlignment;
    case Measure::kTolerance: return kStillMovingTolerance;
    case Measure::kPositiveSimilarity:
    case Measure::kGap: return kStillMovingSimilarity;
  }
  return kStillMovingSimilarity;
}

double SpearmanRho(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size() || x.size() < 2) return kNaN;
  const std::vector<double> rx = Ranks(x), ry = Ranks(y);
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(rx.begin(), rx.end(), 0.0) / n, my = std::accumulate(ry.begin(), ry.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < rx.size(); ++i) {
    sxy += (rx[i] - mx) * (ry[i] - my);
    sxx += (rx[i] - mx) * (rx[i] - mx);
    syy += (ry[i] - my) * (ry[i] - my);
  }
  return (sxx == 0 || syy == 0) ? kNaN : sxy / std::sqrt(sxx * syy);
}

std::vector<ClaimCheck> CheckClaims(const std::vector<Cell>& cells) {
  std::vector<ClaimCheck> checks;
  for (const ClaimRule& rule : Rules()) {
    for (const Group& context : ContextsOf(rule, cells)) {
      ClaimCheck check = Finish(rule.judge(InputFor(cells, context)));
      if (!context.empty()) check.claim += " [" + GroupLabel(context) + "]";
      checks.push_back(std::move(check));
    }
  }
  return checks;
}

double AccuracyError(const Cell& c, Measure m) {
  const double p = c.mean(m) / 100;
  double variance = c.test_samples > 0 ? 1e4 * p * (1 - p) / c.test_samples : 0;
  const Stat& s = c[m];
  if (s.n >= 2) variance += s.std * s.std / s.n;
  return std::sqrt(variance);
}

}  // namespace tempered
