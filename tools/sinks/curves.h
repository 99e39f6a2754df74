// PNG line charts drawn with PLplot's cairo driver: a run's loss and accuracy curves
// (outputs/curves.png) and `dtrain runs compare --plot`.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/metrics.h"

namespace dtrain::sinks {

struct Series {
  Series() = default;
  explicit Series(std::string name) : label(std::move(name)) {}
  std::string label;
  std::vector<double> x, y;
  bool line = true;  ///< false: points only
};

struct Panel {
  std::string title, x_label, y_label;
  std::vector<Series> series;
};

/// Draws `panels` side by side into a PNG of `width` x `height` pixels at `path` (written to a
/// temporary file, then renamed). Throws IoError if PLplot's pngcairo driver is missing or the
/// file cannot be written.
void plot_png(const std::filesystem::path& path, const std::vector<Panel>& panels, int width = 1200,
              int height = 500);

/// Loss and accuracy per epoch, train and validation.
std::vector<Panel> training_curves(const std::vector<EpochMetrics>& history);

}  // namespace dtrain::sinks
