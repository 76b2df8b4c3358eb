// The sweep's plots: data files and one gnuplot script under DIR/plots (kept, so `cd plots && gnuplot plots.gp`
// redraws them after an edit), rendered with pngcairo, which works headless. Text is not "enhanced": an underscore in
// a loss name (hard_simple) would otherwise become a subscript. A series is one loss in one group (hard_k or a
// generic axis value): one line per series against tau, one panel per series against epoch.
#include <glog/logging.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>

#include "common/config.h"
#include "launch/report/report.h"
#include "launch/sweep/scheduler_process.h"
#include "launch/sweep/sweep_spec.h"
#include "launch/sweep/sweep_state.h"

namespace tempered {

namespace {

std::string Num(double v) {
  if (std::isnan(v)) return "NaN";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

// The data files' column of a measure: tau (or epoch) is column 1, the measures follow in Measure order.
int Column(Measure m) { return 2 + static_cast<int>(m); }

struct Series {
  LossConfig::Name loss;
  std::vector<std::pair<std::string, std::string>> group;
  std::vector<Cell> cells;  // tau ascending
  std::string file;         // "hard_hard_k8": <file>.dat, <file>_curve.dat
  std::string title;        // "hard (hard_k=8)"
  int color = 1;
};

std::vector<Series> SeriesOf(const std::vector<Cell>& cells) {
  std::vector<Series> series;
  for (const Cell& c : cells) {
    if (series.empty() || series.back().loss != c.loss || series.back().group != c.group) {
      Series s{c.loss, c.group, {}, LossName(c.loss), LossName(c.loss), static_cast<int>(series.size()) + 1};
      if (!c.group.empty()) s.title += " (" + GroupLabel(c.group) + ")";
      for (const auto& [field, value] : c.group) s.file += "_" + field + value;
      for (char& ch : s.file) ch = std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' ? ch : '_';
      series.push_back(std::move(s));
    }
    series.back().cells.push_back(c);
  }
  return series;
}

std::string CellTitle(const Cell& c) { return LossUsesTau(c.loss) ? "τ = " + FormatFloat(c.tau) : LossName(c.loss); }

// <file>.dat: tau, the measures, label; <file>_curve.dat: one block (gnuplot `index`) per cell with a curve: epoch
// and the measures.
void WriteSeriesData(const std::string& plots_dir, const Series& s) {
  std::ostringstream cells, curve;
  cells << "# tau";
  curve << "# epoch";
  for (int m = 0; m < kMeasureCount; ++m) {
    cells << " " << MeasureKey(static_cast<Measure>(m));
    curve << " " << MeasureKey(static_cast<Measure>(m));
  }
  cells << " label\n";
  curve << " (means over seeds)\n";
  for (const Cell& c : s.cells) {
    cells << Num(c.tau);
    for (const Stat& stat : c.stat) cells << " " << Num(stat.mean);
    cells << " \"" << (LossUsesTau(c.loss) ? FormatFloat(c.tau) : LossName(c.loss)) << "\"\n";
    if (c.curve.empty()) continue;  // no block (ConvergencePanels counts the blocks)
    curve << "# " << CellTitle(c) << "\n";
    for (const auto& [epoch, values] : c.curve) {
      curve << epoch;
      for (double v : values) curve << " " << Num(v);
      curve << "\n";
    }
    curve << "\n\n";
  }
  WriteFileAtomically(plots_dir + "/" + s.file + ".dat", cells.str());
  WriteFileAtomically(plots_dir + "/" + s.file + "_curve.dat", curve.str());
}

// DIR/plots/penalty.dat: s, then p(s) at each tau.
void WritePenaltyData(const std::string& plots_dir, const std::vector<double>& taus) {
  std::ostringstream out;
  out << "# s";
  for (double t : taus) out << " tau=" << FormatFloat(t);
  out << "\n";
  for (int i = 0; i <= 400; ++i) {
    const double s = -1.0 + i / 200.0;
    out << Num(s);
    for (double t : taus) out << " " << Num(RelativePenaltyDensity(s, t));
    out << "\n";
  }
  WriteFileAtomically(plots_dir + "/penalty.dat", out.str());
}

// The infonce cells with local separation (Fig 8).
std::vector<Cell> SeparationCells(const std::vector<Cell>& cells) {
  std::vector<Cell> out;
  for (const Cell& c : cells) {
    if (c.loss == LossConfig::INFONCE && !c.top_negative.empty()) out.push_back(c);
  }
  return out;
}

// DIR/plots/local_separation.dat: row 0 the positive similarity, row k the k-th largest negative; a column per cell.
void WriteSeparationData(const std::string& plots_dir, const std::vector<Cell>& cells) {
  std::ostringstream out;
  out << "# rank (0 = positive)";
  size_t ranks = 0;
  for (const Cell& c : cells) {
    out << " \"" << CellLabel(c) << "\"";
    ranks = std::max(ranks, c.top_negative.size());
  }
  out << "\n";
  for (size_t k = 0; k <= ranks; ++k) {
    out << k;
    for (const Cell& c : cells) {
      out << " " << Num(k == 0 ? c.mean(Measure::kPositiveSimilarity)
                               : k <= c.top_negative.size() ? c.top_negative[k - 1] : NAN);
    }
    out << "\n";
  }
  WriteFileAtomically(plots_dir + "/local_separation.dat", out.str());
}

// Every section starts from gnuplot's defaults (`reset` keeps the terminal), so no setting leaks into the next plot.
std::string Section(const std::string& title, const std::string& output) {
  // The y offsets keep a level at the data's minimum (a loss without tau) off the frame.
  return "reset\nset datafile missing \"NaN\"\nset grid\nset key outside right\nset offsets 0, 0, graph 0.05, "
         "graph 0.05\nset title \"" + title + "\"\nset output \"" + output + "\"\n";
}

// A measure against tau: one line per series that uses tau, a dashed level for each that does not.
std::string TauPlot(const std::vector<Series>& series, const std::vector<double>& taus, const std::string& title,
                    const std::string& output, const std::string& ylabel, Measure m, const std::string& suffix) {
  std::ostringstream lines;
  for (const Series& s : series) {
    const double level = s.cells.front().mean(m);
    if (LossUsesTau(s.loss)) {
      lines << ", \"" << s.file << ".dat\" using 1:" << Column(m) << " with linespoints lw 2 pt 7 lc " << s.color
            << " title \"" << s.title << suffix << "\"";
    } else if (!std::isnan(level)) {
      lines << ", " << Num(level) << " with lines dt 2 lw 2 lc " << s.color << " title \"" << s.title << suffix
            << " (no τ)\"";
    }
  }
  if (lines.str().empty()) return "";  // nothing to draw (gnuplot would stop at an empty plot)
  std::ostringstream s;
  s << Section(title, output) << "set logscale x\nset xlabel \"temperature τ\"\nset ylabel \"" << ylabel << "\"\n"
    << "set xrange [" << Num(taus.front() / 1.5) << ":" << Num(taus.back() * 1.5) << "]\nset xtics (";
  for (size_t i = 0; i < taus.size(); ++i) s << (i ? ", " : "") << Num(taus[i]);  // a log axis labels decades only
  s << ")\nplot " << lines.str().substr(2) << "\n";
  return s.str();
}

std::string TradeOffPlot(const std::vector<Series>& series) {
  std::ostringstream s;
  s << Section("Uniformity vs tolerance (labels: τ)", "uniformity_vs_tolerance.png")
    << "set xlabel \"tolerance\"\nset ylabel \"uniformity\"\nplot ";
  const int x = Column(Measure::kTolerance), y = Column(Measure::kUniformity), label = Column(Measure::kGap) + 1;
  for (size_t i = 0; i < series.size(); ++i) {
    const std::string f = "\"" + series[i].file + ".dat\"";
    s << (i ? ", " : "") << f << " using " << x << ":" << y << " with linespoints lw 2 pt 7 lc " << series[i].color
      << " title \"" << series[i].title << "\", " << f << " using " << x << ":" << y << ":" << label
      << " with labels offset char 1,0.7 notitle";
  }
  return s.str() + "\n";
}

// Fig 8: per infonce tau the positive similarity (a large marker at x = 0) and the 1st..10th largest negative
// similarity (a line over x = 1..10). The gap between them is claim 8.
std::string SeparationPlot(const std::vector<Cell>& cells) {
  if (cells.empty()) return "";
  std::ostringstream s;
  s << Section("Local separation (Fig 8): positive vs the top-10 negatives, infonce", "local_separation.png")
    << "set xlabel \"rank of the negative (0: the positive pair)\"\nset ylabel \"mean cosine similarity\"\n"
    << "set xrange [-0.5:10.5]\nset xtics (\"positive\" 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)\nplot ";
  for (size_t i = 0; i < cells.size(); ++i) {
    const int column = static_cast<int>(i) + 2, color = static_cast<int>(i) + 1;
    s << (i ? ", " : "") << "\"local_separation.dat\" every ::1 using 1:" << column << " with linespoints lw 2 pt 7 lc "
      << color << " title \"" << CellLabel(cells[i]) << "\", \"local_separation.dat\" every ::0::0 using 1:" << column
      << " with points pt 9 ps 2.5 lc " << color << " notitle";
  }
  return s.str() + "\n";
}

// One panel of the convergence plots: a line per (series file, block, title).
struct Panel {
  std::string title;
  std::vector<std::tuple<std::string, size_t, std::string>> lines;
  int last_epoch = 0;
};

// A panel per loss that uses tau (a line per tau) and one for all losses without it (a line each), over the cells
// with a per-epoch curve (runs from before the curve existed have none: gnuplot stops at a plot with no points).
std::vector<Panel> ConvergencePanels(const std::vector<Series>& series) {
  std::vector<Panel> panels;
  Panel without_tau{"losses without τ", {}, 0};
  for (const Series& ser : series) {
    Panel panel{ser.title, {}, 0};
    Panel& into = LossUsesTau(ser.loss) ? panel : without_tau;
    size_t block = 0;  // WriteSeriesData writes a block per cell with a curve
    for (const Cell& c : ser.cells) {
      if (c.curve.empty()) continue;
      into.lines.emplace_back(ser.file, block++, LossUsesTau(ser.loss) ? CellTitle(c) : ser.title);
      into.last_epoch = std::max(into.last_epoch, c.curve.rbegin()->first);
    }
    if (!panel.lines.empty()) panels.push_back(panel);
  }
  if (!without_tau.lines.empty()) panels.push_back(without_tau);
  return panels;
}

// A measure against epoch, mean over seeds: one panel per ConvergencePanels.
std::string ConvergencePlot(const std::vector<Panel>& panels, Measure m, const std::string& name) {
  const int count = static_cast<int>(panels.size()), columns = count > 1 ? 2 : 1;
  const int rows = (count + columns - 1) / columns;
  std::ostringstream s;
  s << "reset\nset terminal pngcairo size " << 640 * columns << "," << 420 * rows
    << " noenhanced font \"sans,10\"\nset output \"" << name << ".png\"\nset datafile missing \"NaN\"\nset grid\n"
    << "set key outside right\nset xlabel \"epoch\"\nset ylabel \"" << MeasureName(m) << "\"\n"
    << "set multiplot layout " << rows << "," << columns << " title \"" << MeasureName(m)
    << " against epoch (per-epoch curve, mean over seeds)\"\n";
  for (const Panel& panel : panels) {
    s << "set title \"" << panel.title << "\"\n" << (panel.last_epoch <= 20 ? "set xtics 1\n" : "set xtics autofreq\n")
      << "plot ";  // whole epochs, not gnuplot's 0.5 steps
    for (size_t i = 0; i < panel.lines.size(); ++i) {
      const auto& [file, block, title] = panel.lines[i];
      s << (i ? ", " : "") << "\"" << file << "_curve.dat\" index " << block << " using 1:" << Column(m)
        << " with linespoints lw 2 pt 7 lc " << i + 1 << " title \"" << title << "\"";
    }
    s << "\n";
  }
  return s.str() + "unset multiplot\n";
}

std::string PenaltyPlot(const std::vector<double>& taus) {
  std::ostringstream s;
  s << Section("Relative penalty of negatives uniform on s ∈ [-1, 1]", "relative_penalty.png")
    << "set xlabel \"similarity s\"\nset ylabel \"penalty density p(s) = exp(s/τ) / ∫exp(u/τ)du\"\n"
    << "set logscale y\nset yrange [1e-4:*]\nplot ";
  for (size_t i = 0; i < taus.size(); ++i) {
    s << (i ? ", " : "") << "\"penalty.dat\" using 1:" << i + 2 << " with lines lw 2 title \"τ = "
      << FormatFloat(taus[i]) << "\"";
  }
  return s.str() + "\n";
}

// The cells whose tau moved during training (loss.tau_mode other than constant): their tau per epoch.
std::vector<Cell> TauCells(const std::vector<Cell>& cells) {
  std::vector<Cell> moving;
  for (const Cell& c : cells) {
    const bool moved = std::any_of(c.tau_curve.begin(), c.tau_curve.end(),
                                   [&](const auto& point) { return std::fabs(point.second - c.tau) > 1e-6; });
    if (LossUsesTau(c.loss) && moved) moving.push_back(c);
  }
  return moving;
}

void WriteTauData(const std::string& plots_dir, const std::vector<Cell>& cells) {
  std::ostringstream s;
  for (const Cell& c : cells) {
    s << "# " << CellLabel(c) << "\n";
    for (const auto& [epoch, tau] : c.tau_curve) s << epoch << " " << Num(tau) << "\n";
    s << "\n\n";
  }
  WriteFileAtomically(plots_dir + "/tau_curve.dat", s.str());
}

std::string TauEpochPlot(const std::vector<Cell>& cells) {
  if (cells.empty()) return "";
  std::ostringstream s;
  s << Section("τ against epoch (learnable, scheduled, adaptive; mean over seeds)", "tau_vs_epoch.png")
    << "set xlabel \"epoch\"\nset ylabel \"τ\"\nset logscale y\nplot ";
  for (size_t i = 0; i < cells.size(); ++i) {
    s << (i ? ", " : "") << "\"tau_curve.dat\" index " << i << " using 1:2 with linespoints lw 2 pt 7 lc " << i + 1
      << " title \"" << CellLabel(cells[i]) << "\"";
  }
  return s.str() + "\nunset logscale y\n";
}

const char kTerminal[] = "set terminal pngcairo size 960,600 noenhanced font \"sans,11\"\n";

std::string Script(const std::vector<Cell>& cells, const std::vector<double>& taus, bool linear) {
  const std::vector<Series> series = SeriesOf(cells);
  std::ostringstream s;
  s << "# Written by tempered-sweep; redraw with: cd plots && gnuplot plots.gp\n" << kTerminal
    << TauPlot(series, taus, "Accuracy vs temperature", "accuracy_vs_tau.png", "top-1 accuracy (%)",
               linear ? Measure::kLinear : Measure::kKnn, linear ? " linear" : " kNN")
    << TauPlot(series, taus, "kNN accuracy vs temperature", "knn_vs_tau.png", "kNN top-1 accuracy (%)",
               Measure::kKnn, "")
    << TauPlot(series, taus, "Uniformity (-L_uniformity, larger = more uniform) vs temperature",
               "uniformity_vs_tau.png", "uniformity", Measure::kUniformity, "")
    << TauPlot(series, taus, "Tolerance vs temperature", "tolerance_vs_tau.png", "tolerance", Measure::kTolerance, "")
    << TradeOffPlot(series) << SeparationPlot(SeparationCells(cells));
  const std::vector<Panel> panels = ConvergencePanels(series);
  if (!panels.empty()) {
    for (Measure m : {Measure::kUniformity, Measure::kTolerance, Measure::kAlignment, Measure::kKnn}) {
      s << ConvergencePlot(panels, m, std::string("convergence_") + MeasureKey(m));
    }
    s << kTerminal;  // the convergence plots sized their own
  }
  s << PenaltyPlot(taus) << TauEpochPlot(TauCells(cells));
  return s.str();
}

}  // namespace

double RelativePenaltyDensity(double s, double tau) {
  return std::exp((s - 1) / tau) / (tau * -std::expm1(-2 / tau));
}

const std::vector<PlotInfo>& ReportPlots() {
  static const std::vector<PlotInfo> plots = {
      {"accuracy_vs_tau", "Accuracy against τ, one line per loss; losses without τ as dashed levels."},
      {"knn_vs_tau", "kNN accuracy against τ."},
      {"uniformity_vs_tau", "Uniformity (−L_uniformity, larger = more uniform) against τ."},
      {"tolerance_vs_tau", "Tolerance (mean similarity of same-class pairs) against τ."},
      {"uniformity_vs_tolerance", "The uniformity-tolerance trade-off, each point labelled with its τ."},
      {"local_separation", "Local separation (Fig 8): per infonce τ the positive similarity (large marker) and the "
                           "1st..10th largest negative similarity; claim 8 is about the gap between them."},
      {"convergence_uniformity", "Convergence: uniformity against epoch, one panel per loss, one line per τ."},
      {"convergence_tolerance", "Convergence: tolerance against epoch."},
      {"convergence_alignment", "Convergence: alignment against epoch."},
      {"convergence_knn_top1", "Convergence: kNN top-1 against epoch (the curve's bounded sample)."},
      {"relative_penalty", "Relative penalty density p(s) of negatives spread uniformly on s ∈ [−1, 1] "
                           "(closed form): small τ puts the whole penalty on the hardest negatives."},
      {"tau_vs_epoch", "τ against epoch for each learnable, scheduled or adaptive τ (loss.tau_mode)."}};
  return plots;
}

std::vector<std::string> WritePlots(const std::string& sweep_dir, const std::vector<Cell>& cells) {
  if (cells.empty()) return {};
  const std::string plots_dir = sweep_dir + "/plots";
  MakeDirectories(plots_dir);
  std::set<double> tau_set;
  bool linear = true;
  for (const Cell& c : cells) {
    if (!std::isnan(c.tau)) tau_set.insert(c.tau);
    linear = linear && c[Measure::kLinear].n > 0;
  }
  if (tau_set.empty()) tau_set = {0.05, 0.1, 0.2, 0.5, 1.0};  // the penalty curves still show what tau does
  const std::vector<double> taus(tau_set.begin(), tau_set.end());
  for (const Series& s : SeriesOf(cells)) WriteSeriesData(plots_dir, s);
  WriteSeparationData(plots_dir, SeparationCells(cells));
  WritePenaltyData(plots_dir, taus);
  WriteTauData(plots_dir, TauCells(cells));
  WriteFileAtomically(plots_dir + "/plots.gp", Script(cells, taus, linear));
  for (const PlotInfo& plot : ReportPlots()) std::remove((plots_dir + "/" + plot.name + ".png").c_str());  // stale
  const CommandResult r = RunCommand({"gnuplot", "-e", "cd '" + plots_dir + "'", plots_dir + "/plots.gp"});
  if (r.exit_code != 0) {
    LOG(WARNING) << "gnuplot failed, so the report has no plots (install gnuplot-nox): " << r.output;
    return {};
  }
  std::vector<std::string> pngs;
  for (const PlotInfo& plot : ReportPlots()) {
    const std::string png = std::string("plots/") + plot.name + ".png";
    if (std::ifstream(sweep_dir + "/" + png)) pngs.push_back(png);
  }
  return pngs;
}

}  // namespace tempered
