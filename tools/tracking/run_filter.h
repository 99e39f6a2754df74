// MLflow-style run search: `metrics.validation_acc > 0.97 and params.batch_size = 50 and
// tags.team = 'a'`, and ordering such as `metrics.validation_acc DESC`. Parsed once, evaluated on
// RunRecords (so no SQL is ever built from the filter text).
#pragma once

#include <string>
#include <vector>

#include "tools/tracking/workspace.h"

namespace dtrain::tracking {

/// What a filter or order key names: metrics.X, params.X, tags.X or a run attribute.
struct RunField {
  enum class Kind { kMetric, kParam, kTag, kAttribute } kind = Kind::kAttribute;
  std::string key;
};

/// The field's value in `run` as text, or false if the run has none. Metrics and numeric
/// attributes come back as numbers in `number` with `is_number` set.
struct FieldValue {
  bool present = false;
  bool is_number = false;
  double number = 0;
  std::string text;
};
FieldValue field_value(const RunRecord& run, const RunField& field, double now,
                       const std::string& host);

class RunFilter {
 public:
  /// Parses `text` (empty: matches everything). Throws ConfigError "--filter: ... at position N"
  /// with the text and a caret under the position.
  explicit RunFilter(const std::string& text);
  /// `now` and `host` decide whether a running run counts as `lost` (attributes.status).
  bool matches(const RunRecord& run, double now, const std::string& host) const;

  struct Clause {
    RunField field;
    std::string op;  ///< =, !=, <, <=, >, >=, LIKE, ILIKE
    bool literal_is_number = false;
    double number = 0;
    std::string text;
  };
  const std::vector<Clause>& clauses() const { return clauses_; }

 private:
  std::vector<Clause> clauses_;
};

/// `KEY [ASC|DESC][, KEY [ASC|DESC]...]`; default order is start_time DESC. Runs without the key
/// sort last. Throws ConfigError "--order-by: ..." when malformed.
void order_runs(std::vector<RunRecord>& runs, const std::string& order_by, double now,
                const std::string& host);

/// Parses `metrics.x`, `params.x`, `tags.x`, `attributes.x` or a bare attribute name; throws
/// ConfigError naming `flag` when it names nothing.
RunField parse_run_field(const std::string& text, const std::string& flag);

}  // namespace dtrain::tracking
