#include "tools/sinks/curves.h"

#include <plplot.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <mutex>

#include "core/errors.h"

namespace dtrain::sinks {
namespace fs = std::filesystem;

namespace {

// Colour map 0: background, axes/text, then the series colours (matplotlib's first six).
// Index 8 is the light grey of the grid.
constexpr PLINT kRed[] = {255, 0, 31, 255, 44, 214, 148, 140, 210};
constexpr PLINT kGreen[] = {255, 0, 119, 127, 160, 39, 103, 86, 210};
constexpr PLINT kBlue[] = {255, 0, 180, 14, 44, 40, 189, 75, 210};
constexpr int kSeriesColours = 6;
constexpr PLINT kGridColour = 8;

/// True when the curves end in the upper half of the plot: the legend then goes at the bottom.
bool curves_end_high(const Panel& panel, double y0, double y1) {
  double sum = 0;
  int n = 0;
  for (const auto& s : panel.series) {
    if (!s.y.empty() && std::isfinite(s.y.back())) sum += s.y.back(), ++n;
  }
  return n > 0 && (sum / n - y0) / (y1 - y0) > 0.5;
}

bool have_pngcairo() {
  // plgDevs fills caller-owned arrays; n is their size on input, the device count on output.
  std::vector<const char*> menu_storage(128), device_storage(128);
  const char** menus = menu_storage.data();
  const char** devices = device_storage.data();
  PLINT n = static_cast<PLINT>(device_storage.size());
  plgDevs(&menus, &devices, &n);
  for (PLINT i = 0; i < n; ++i) {
    if (std::strcmp(devices[i], "pngcairo") == 0) return true;
  }
  return false;
}

// PLplot reports fatal errors through plexit, which ends the process: say why first.
int on_plplot_exit(const char* message) {
  spdlog::error("PLplot: {}", message);
  return 1;
}

void axis_range(const Panel& panel, double& x0, double& x1, double& y0, double& y1) {
  x0 = y0 = INFINITY;
  x1 = y1 = -INFINITY;
  for (const auto& s : panel.series) {
    for (double v : s.x) {
      if (std::isfinite(v)) x0 = std::min(x0, v), x1 = std::max(x1, v);
    }
    for (double v : s.y) {
      if (std::isfinite(v)) y0 = std::min(y0, v), y1 = std::max(y1, v);
    }
  }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1;
  if (!std::isfinite(y0)) y0 = 0, y1 = 1;
  if (x1 - x0 < 1e-12) x0 -= 0.5, x1 += 0.5;
  const double pad = y1 - y0 < 1e-12 ? std::max(std::abs(y0) * 0.05, 0.05) : (y1 - y0) * 0.06;
  y0 -= pad;
  y1 += pad;
}

}  // namespace

void plot_png(const fs::path& path, const std::vector<Panel>& panels, int width, int height) {
  // PLplot keeps one global stream: one plot at a time in this process.
  static std::mutex plplot_mutex;
  std::lock_guard<std::mutex> lock(plplot_mutex);
  if (!have_pngcairo()) {
    throw IoError("cannot draw " + path.string() +
                  ": PLplot's pngcairo driver is missing (install plplot-driver-cairo)");
  }
  std::error_code ec;
  if (!path.parent_path().empty()) fs::create_directories(path.parent_path(), ec);
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  {
    std::FILE* probe = std::fopen(tmp.c_str(), "wb");
    if (probe == nullptr) {
      throw IoError("cannot write " + tmp.string() + ": " + std::strerror(errno));
    }
    std::fclose(probe);
  }
  plsexit(on_plplot_exit);
  plsdev("pngcairo");
  plsfnam(tmp.c_str());
  const std::string geometry = std::to_string(width) + "x" + std::to_string(height);
  plsetopt("geometry", geometry.c_str());
  plscmap0(kRed, kGreen, kBlue, 9);
  plssub(static_cast<PLINT>(std::max<size_t>(1, panels.size())), 1);
  plinit();
  for (const auto& panel : panels) {
    pladv(0);
    plschr(0, 0.75);
    plvpor(0.16, 0.95, 0.14, 0.9);
    double x0, x1, y0, y1;
    axis_range(panel, x0, x1, y0, y1);
    plwind(x0, x1, y0, y1);
    // Whole-number ticks along x when it counts epochs.
    const double xtick = x1 - x0 <= 12 ? 1 : 0;
    plcol0(kGridColour);
    plbox("g", xtick, 0, "g", 0, 0);
    plcol0(1);
    plbox("bcnst", xtick, 0, "bcnstv", 0, 0);
    pllab(panel.x_label.c_str(), panel.y_label.c_str(), panel.title.c_str());
    std::vector<PLINT> opts, line_colours, line_styles, symbol_colours, symbol_numbers,
        text_colours;
    std::vector<PLFLT> line_widths, symbol_scales;
    std::vector<const char*> texts, symbols;
    for (size_t i = 0; i < panel.series.size(); ++i) {
      const Series& s = panel.series[i];
      const PLINT colour = 2 + static_cast<PLINT>(i % kSeriesColours);
      plcol0(colour);
      plwidth(2.0);
      const auto n = static_cast<PLINT>(std::min(s.x.size(), s.y.size()));
      if (n > 1 && s.line) plline(n, s.x.data(), s.y.data());
      if (s.line) {
        plstring(n, s.x.data(), s.y.data(), "#(850)");  // a dot on every point
      } else {
        plssym(0, 1.4);
        plpoin(n, s.x.data(), s.y.data(), 17);  // filled markers, no line
        plssym(0, 1.0);
      }
      plwidth(1.0);
      opts.push_back(s.line ? PL_LEGEND_LINE : PL_LEGEND_SYMBOL);
      line_colours.push_back(colour);
      line_styles.push_back(1);
      line_widths.push_back(2.0);
      symbol_colours.push_back(colour);
      symbol_numbers.push_back(s.line ? 0 : 1);
      symbol_scales.push_back(1.4);
      symbols.push_back(s.line ? "" : "#(841)");
      text_colours.push_back(1);
      texts.push_back(s.label.c_str());
    }
    if (!panel.series.empty()) {
      PLFLT legend_width = 0, legend_height = 0;
      pllegend(&legend_width, &legend_height, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
               PL_POSITION_INSIDE | PL_POSITION_RIGHT |
                   (curves_end_high(panel, y0, y1) ? PL_POSITION_BOTTOM : PL_POSITION_TOP),
               0.02, 0.02, 0.08, 0, 1, 1, 0, 0, static_cast<PLINT>(panel.series.size()),
               opts.data(), 0.6, 0.8, 2.0, 0.0, text_colours.data(), texts.data(), nullptr, nullptr,
               nullptr, nullptr, line_colours.data(), line_styles.data(), line_widths.data(),
               symbol_colours.data(), symbol_scales.data(), symbol_numbers.data(), symbols.data());
    }
  }
  plend();
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw IoError("cannot write " + path.string() + ": " + ec.message());
  }
}

std::vector<Panel> training_curves(const std::vector<EpochMetrics>& history) {
  Series train_loss{"train"}, val_loss{"validation"};
  Series train_acc{"train"}, val_acc{"validation"};
  for (const auto& m : history) {
    const auto e = static_cast<double>(m.epoch);
    for (Series* s : {&train_loss, &val_loss, &train_acc, &val_acc}) s->x.push_back(e);
    train_loss.y.push_back(m.train_loss);
    val_loss.y.push_back(m.validation_loss);
    train_acc.y.push_back(m.train_acc);
    val_acc.y.push_back(m.validation_acc);
  }
  return {{"Loss", "epoch", "cross-entropy loss", {train_loss, val_loss}},
          {"Accuracy", "epoch", "accuracy", {train_acc, val_acc}}};
}

}  // namespace dtrain::sinks
