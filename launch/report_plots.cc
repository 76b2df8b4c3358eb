// The sweep's plots: data files and one gnuplot script under DIR/plots (kept, so `cd plots && gnuplot plots.gp`
// redraws them after an edit), rendered with pngcairo, which works headless. Text is not "enhanced": an underscore in
// a loss name (hard_simple) would otherwise become a subscript.
#include <glog/logging.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "launch/report.h"
#include "launch/scheduler_process.h"
#include "launch/sweep_spec.h"
#include "launch/sweep_state.h"
#include "trainer/config.h"

namespace tempered {

namespace {

// One colour per loss in every plot.
int LossColor(LossConfig::Name loss) { return static_cast<int>(loss); }

std::string Num(double v) {
  if (std::isnan(v)) return "NaN";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

// DIR/plots/<loss>.dat: tau knn linear uniformity alignment tolerance label.
void WriteLossData(const std::string& plots_dir, const std::vector<Cell>& cells, LossConfig::Name loss) {
  std::ostringstream out;
  out << "# tau knn_top1 linear_top1 uniformity alignment tolerance label\n";
  for (const Cell& c : cells) {
    if (c.loss != loss) continue;
    const std::string label = LossUsesTau(loss) ? FormatFloat(c.tau) : LossName(loss);
    out << Num(c.tau) << " " << Num(c.knn) << " " << Num(c.linear) << " " << Num(c.uniformity) << " "
        << Num(c.alignment) << " " << Num(c.tolerance) << " \"" << label << "\"\n";
  }
  WriteFileAtomically(plots_dir + "/" + LossName(loss) + ".dat", out.str());
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

// A metric against tau: one line per loss that uses tau, a dashed level for each that does not.
std::string TauPlot(const std::vector<Cell>& cells, const std::set<LossConfig::Name>& losses,
                    const std::string& output, const std::string& ylabel, int column, const std::string& suffix) {
  std::ostringstream s, series;
  s << "set output \"" << output << "\"\nset ylabel \"" << ylabel << "\"\n";
  for (LossConfig::Name loss : losses) {
    const std::string name = LossName(loss);
    if (LossUsesTau(loss)) {
      series << ", \"" << name << ".dat\" using 1:" << column << " with linespoints lw 2 pt 7 lc " << LossColor(loss)
             << " title \"" << name << suffix << "\"";
      continue;
    }
    for (const Cell& c : cells) {
      const double v = column == 2 ? c.knn : column == 3 ? c.linear : column == 4 ? c.uniformity : c.tolerance;
      if (c.loss == loss && !std::isnan(v)) {
        series << ", " << Num(v) << " with lines dt 2 lw 2 lc " << LossColor(loss) << " title \"" << name << suffix
               << " (no τ)\"";
      }
    }
  }
  if (series.str().empty()) return "";  // nothing to draw (gnuplot would stop at an empty plot)
  s << "plot " << series.str().substr(2) << "\n";
  return s.str();
}

std::string Script(const std::vector<Cell>& cells, const std::vector<double>& taus, bool linear) {
  std::set<LossConfig::Name> losses;
  for (const Cell& c : cells) losses.insert(c.loss);
  std::ostringstream s;
  s << "# Written by tempered-sweep; redraw with: cd plots && gnuplot plots.gp\n"
    << "set terminal pngcairo size 960,600 noenhanced font \"sans,11\"\nset datafile missing \"NaN\"\n"
    << "set grid\nset key outside right\nset logscale x\nset xlabel \"temperature τ\"\n"
    << "set xrange [" << Num(taus.front() / 1.5) << ":" << Num(taus.back() * 1.5) << "]\nset xtics (";
  for (size_t i = 0; i < taus.size(); ++i) s << (i ? ", " : "") << Num(taus[i]);  // a log axis labels decades only
  s << ")\n";
  s << "set title \"Accuracy vs temperature\"\n"
    << TauPlot(cells, losses, "accuracy_vs_tau.png", "top-1 accuracy (%)", linear ? 3 : 2,
               linear ? " linear" : " kNN");
  s << "set title \"kNN accuracy vs temperature\"\n"
    << TauPlot(cells, losses, "knn_vs_tau.png", "kNN top-1 accuracy (%)", 2, "");
  s << "set title \"Uniformity (-L_uniformity, larger = more uniform) vs temperature\"\n"
    << TauPlot(cells, losses, "uniformity_vs_tau.png", "uniformity", 4, "");
  s << "set title \"Tolerance vs temperature\"\n" << TauPlot(cells, losses, "tolerance_vs_tau.png", "tolerance", 6, "");
  s << "unset logscale x\nset autoscale x\nset xtics autofreq\nset title \"Uniformity vs tolerance (labels: τ)\"\n"
    << "set xlabel \"tolerance\"\nset ylabel \"uniformity\"\nset output \"uniformity_vs_tolerance.png\"\nplot ";
  const char* sep = "";
  for (LossConfig::Name loss : losses) {
    const std::string f = "\"" + LossName(loss) + ".dat\"";
    s << sep << f << " using 6:4 with linespoints lw 2 pt 7 lc " << LossColor(loss) << " title \"" << LossName(loss)
      << "\", " << f << " using 6:4:7 with labels offset char 1,0.7 notitle";
    sep = ", ";
  }
  s << "\nset title \"Relative penalty of negatives uniform on s ∈ [-1, 1]\"\nset xlabel \"similarity s\"\n"
    << "set ylabel \"penalty density p(s) = exp(s/τ) / ∫exp(u/τ)du\"\nset logscale y\nset yrange [1e-4:*]\n"
    << "set output \"relative_penalty.png\"\nplot ";
  for (size_t i = 0; i < taus.size(); ++i) {
    s << (i ? ", " : "") << "\"penalty.dat\" using 1:" << i + 2 << " with lines lw 2 title \"τ = "
      << FormatFloat(taus[i]) << "\"";
  }
  s << "\n";
  return s.str();
}

}  // namespace

double RelativePenaltyDensity(double s, double tau) {
  return std::exp((s - 1) / tau) / (tau * -std::expm1(-2 / tau));
}

std::vector<std::string> WritePlots(const std::string& sweep_dir, const std::vector<Cell>& cells) {
  if (cells.empty()) return {};
  const std::string plots_dir = sweep_dir + "/plots";
  MakeDirectories(plots_dir);
  std::set<double> tau_set;
  bool linear = true;
  for (const Cell& c : cells) {
    if (!std::isnan(c.tau)) tau_set.insert(c.tau);
    linear = linear && !std::isnan(c.linear);
  }
  if (tau_set.empty()) tau_set = {0.05, 0.1, 0.2, 0.5, 1.0};  // the penalty curves still show what tau does
  const std::vector<double> taus(tau_set.begin(), tau_set.end());
  std::set<LossConfig::Name> losses;
  for (const Cell& c : cells) losses.insert(c.loss);
  for (LossConfig::Name loss : losses) WriteLossData(plots_dir, cells, loss);
  WritePenaltyData(plots_dir, taus);
  WriteFileAtomically(plots_dir + "/plots.gp", Script(cells, taus, linear));
  const CommandResult r = RunCommand({"gnuplot", "-e", "cd '" + plots_dir + "'", plots_dir + "/plots.gp"});
  if (r.exit_code != 0) {
    LOG(WARNING) << "gnuplot failed, so the report has no plots (install gnuplot-nox): " << r.output;
    return {};
  }
  std::vector<std::string> pngs;
  for (const char* name : {"accuracy_vs_tau", "knn_vs_tau", "uniformity_vs_tau", "tolerance_vs_tau",
                           "uniformity_vs_tolerance", "relative_penalty"}) {
    if (std::ifstream(plots_dir + "/" + name + ".png")) pngs.push_back(std::string("plots/") + name + ".png");
  }
  return pngs;
}

}  // namespace tempered
