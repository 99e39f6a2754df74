#include "tools/tracking/run_filter.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <optional>

#include "core/errors.h"

namespace dtrain::tracking {

namespace {

const std::vector<std::string> kAttributes = {
    "id",       "run_id",   "name", "run_name",   "experiment", "status",        "start_time",
    "end_time", "duration", "host", "world_size", "strategy",   "dtrain_version"};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::optional<double> as_number(const std::string& s) {
  if (s.empty()) return std::nullopt;
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    if (used == s.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

/// SQL LIKE: % any run, _ one character.
bool like(const std::string& s, const std::string& pattern, bool fold_case) {
  const std::string a = fold_case ? lower(s) : s;
  const std::string p = fold_case ? lower(pattern) : pattern;
  // Classic two-pointer wildcard match with backtracking to the last %.
  size_t i = 0, j = 0, star = std::string::npos, mark = 0;
  while (i < a.size()) {
    if (j < p.size() && (p[j] == '_' || p[j] == a[i])) {
      ++i;
      ++j;
    } else if (j < p.size() && p[j] == '%') {
      star = j++;
      mark = i;
    } else if (star != std::string::npos) {
      j = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (j < p.size() && p[j] == '%') ++j;
  return j == p.size();
}

[[noreturn]] void parse_error(const std::string& flag, const std::string& text, size_t pos,
                              const std::string& what) {
  throw ConfigError(flag + ": " + what + " at position " + std::to_string(pos + 1) + "\n  " + text +
                    "\n  " + std::string(pos, ' ') + "^");
}

/// A tokenizer over the filter text.
class Lexer {
 public:
  Lexer(const std::string& text, std::string flag) : s_(text), flag_(std::move(flag)) {}

  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool done() {
    skip_space();
    return pos_ >= s_.size();
  }
  size_t pos() const { return pos_; }

  /// An identifier with dots: metrics.validation_acc, or a backquoted key after the dot.
  std::string identifier() {
    skip_space();
    const size_t start = pos_;
    std::string out;
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c == '`' || (c == '"' && !out.empty() && out.back() == '.')) {
        const size_t close = s_.find(c, pos_ + 1);
        if (close == std::string::npos) parse_error(flag_, s_, pos_, "unclosed quote");
        out += s_.substr(pos_ + 1, close - pos_ - 1);
        pos_ = close + 1;
      } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' ||
                 c == '/') {
        out += c;
        ++pos_;
      } else {
        break;
      }
    }
    if (out.empty()) {
      parse_error(flag_, s_, start,
                  "expected a field such as metrics.validation_acc, params.batch_size, "
                  "tags.team or status");
    }
    return out;
  }

  std::string comparison() {
    skip_space();
    const size_t start = pos_;
    for (const char* op : {"<=", ">=", "!=", "==", "<>", "=", "<", ">"}) {
      const size_t n = std::char_traits<char>::length(op);
      if (s_.compare(pos_, n, op) == 0) {
        pos_ += n;
        const std::string o = op;
        return o == "==" ? "=" : o == "<>" ? "!=" : o;
      }
    }
    for (const char* word : {"ILIKE", "LIKE"}) {
      const size_t n = std::char_traits<char>::length(word);
      if (lower(s_.substr(pos_, n)) == lower(word) &&
          (pos_ + n >= s_.size() || std::isspace(static_cast<unsigned char>(s_[pos_ + n])))) {
        pos_ += n;
        return word;
      }
    }
    parse_error(flag_, s_, start, "expected a comparison (=, !=, <, <=, >, >=, LIKE, ILIKE)");
  }

  /// A quoted string or a number. Returns (is_number, number, text).
  RunFilter::Clause value(RunFilter::Clause c) {
    skip_space();
    const size_t start = pos_;
    if (pos_ < s_.size() && (s_[pos_] == '\'' || s_[pos_] == '"')) {
      const char q = s_[pos_];
      const size_t close = s_.find(q, pos_ + 1);
      if (close == std::string::npos) parse_error(flag_, s_, pos_, "unclosed quote");
      c.text = s_.substr(pos_ + 1, close - pos_ - 1);
      pos_ = close + 1;
      return c;
    }
    while (pos_ < s_.size() && !std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    c.text = s_.substr(start, pos_ - start);
    if (auto v = as_number(c.text)) {
      c.literal_is_number = true;
      c.number = *v;
      return c;
    }
    parse_error(flag_, s_, start,
                c.text.empty() ? "expected a value (a number or a 'quoted string')"
                               : "expected a number or a 'quoted string', got '" + c.text + "'");
  }

  bool keyword(const std::string& word) {
    skip_space();
    const size_t n = word.size();
    if (lower(s_.substr(pos_, n)) == word &&
        (pos_ + n >= s_.size() || std::isspace(static_cast<unsigned char>(s_[pos_ + n])))) {
      pos_ += n;
      return true;
    }
    return false;
  }

 private:
  const std::string& s_;
  std::string flag_;
  size_t pos_ = 0;
};

int compare_values(const FieldValue& v, const RunFilter::Clause& c) {
  if (v.is_number && c.literal_is_number) return v.number < c.number ? -1 : v.number > c.number;
  if (!v.is_number && c.literal_is_number) {
    // Params and tags are text; compare as numbers when both read as numbers (batch_size = 50).
    if (auto n = as_number(v.text)) return *n < c.number ? -1 : *n > c.number;
  }
  const int cmp = v.text.compare(c.text);
  return cmp < 0 ? -1 : cmp > 0;
}

}  // namespace

RunField parse_run_field(const std::string& text, const std::string& flag) {
  const size_t dot = text.find('.');
  RunField f;
  if (dot == std::string::npos) {
    f.kind = RunField::Kind::kAttribute;
    f.key = lower(text);
  } else {
    const std::string entity = lower(text.substr(0, dot));
    f.key = text.substr(dot + 1);
    if (entity == "metrics" || entity == "metric") {
      f.kind = RunField::Kind::kMetric;
    } else if (entity == "params" || entity == "param" || entity == "parameters") {
      f.kind = RunField::Kind::kParam;
      // Params are stored under run.json keys (batch_size); accept flag spelling too.
      std::replace(f.key.begin(), f.key.end(), '-', '_');
    } else if (entity == "tags" || entity == "tag") {
      f.kind = RunField::Kind::kTag;
    } else if (entity == "attributes" || entity == "attribute" || entity == "attr" ||
               entity == "run") {
      f.kind = RunField::Kind::kAttribute;
      f.key = lower(f.key);
    } else {
      throw ConfigError(flag + ": '" + text + "': expected metrics.<key>, params.<key>, " +
                        "tags.<key> or attributes.<name>");
    }
  }
  if (f.key.empty()) throw ConfigError(flag + ": '" + text + "': the key after the dot is empty");
  if (f.kind == RunField::Kind::kAttribute &&
      std::find(kAttributes.begin(), kAttributes.end(), f.key) == kAttributes.end()) {
    std::string list;
    for (const auto& a : kAttributes) list += (list.empty() ? "" : ", ") + a;
    throw ConfigError(flag + ": unknown run attribute '" + f.key + "' (attributes: " + list +
                      "; or metrics.<key>, params.<key>, tags.<key>)");
  }
  return f;
}

FieldValue field_value(const RunRecord& run, const RunField& field, double now,
                       const std::string& host) {
  FieldValue v;
  auto text = [&](const std::string& s) {
    v.present = true;
    v.text = s;
  };
  auto number = [&](double d) {
    v.present = true;
    v.is_number = true;
    v.number = d;
    v.text = std::to_string(d);
  };
  switch (field.kind) {
    case RunField::Kind::kMetric: {
      auto it = run.metrics.find(field.key);
      if (it != run.metrics.end()) number(it->second);
      break;
    }
    case RunField::Kind::kParam: {
      auto it = run.params.find(field.key);
      if (it != run.params.end()) text(it->second);
      break;
    }
    case RunField::Kind::kTag: {
      auto it = run.tags.find(field.key);
      if (it != run.tags.end()) text(it->second);
      break;
    }
    case RunField::Kind::kAttribute: {
      const std::string& k = field.key;
      if (k == "id" || k == "run_id") text(run.id);
      if (k == "name" || k == "run_name") text(run.name);
      if (k == "experiment") text(run.experiment);
      if (k == "status") text(effective_status(run, now, host));
      if (k == "host") text(run.host);
      if (k == "strategy") text(run.strategy);
      if (k == "dtrain_version") text(run.dtrain_version);
      if (k == "start_time") number(run.start_time);
      if (k == "end_time" && run.end_time > 0) number(run.end_time);
      if (k == "duration") number((run.end_time > 0 ? run.end_time : now) - run.start_time);
      if (k == "world_size") number(static_cast<double>(run.world_size));
      break;
    }
  }
  return v;
}

RunFilter::RunFilter(const std::string& text) {
  const std::string flag = "--filter";
  Lexer lex(text, flag);
  if (lex.done()) return;
  while (true) {
    Clause c;
    const size_t field_pos = (lex.skip_space(), lex.pos());
    const std::string name = lex.identifier();
    try {
      c.field = parse_run_field(name, flag);
    } catch (const ConfigError& e) {
      parse_error(flag, text, field_pos, std::string(e.what()).substr(flag.size() + 2));
    }
    c.op = lex.comparison();
    c = lex.value(std::move(c));
    if ((c.op == "LIKE" || c.op == "ILIKE") && c.literal_is_number) {
      parse_error(flag, text, lex.pos() - c.text.size(), c.op + " needs a 'quoted pattern'");
    }
    clauses_.push_back(std::move(c));
    if (lex.done()) break;
    const size_t at = lex.pos();
    if (!lex.keyword("and")) {
      parse_error(flag, text, at,
                  lex.keyword("or") ? "OR is not supported (MLflow filters join clauses with AND)"
                                    : "expected AND between clauses");
    }
    if (lex.done()) parse_error(flag, text, lex.pos(), "expected a clause after AND");
  }
}

bool RunFilter::matches(const RunRecord& run, double now, const std::string& host) const {
  for (const auto& c : clauses_) {
    const FieldValue v = field_value(run, c.field, now, host);
    if (!v.present) return false;
    if (c.op == "LIKE" || c.op == "ILIKE") {
      if (!like(v.text, c.text, c.op == "ILIKE")) return false;
      continue;
    }
    const int cmp = compare_values(v, c);
    const bool ok = c.op == "="    ? cmp == 0
                    : c.op == "!=" ? cmp != 0
                    : c.op == "<"  ? cmp < 0
                    : c.op == "<=" ? cmp <= 0
                    : c.op == ">"  ? cmp > 0
                                   : cmp >= 0;
    if (!ok) return false;
  }
  return true;
}

void order_runs(std::vector<RunRecord>& runs, const std::string& order_by, double now,
                const std::string& host) {
  struct Key {
    RunField field;
    bool descending = false;
  };
  std::vector<Key> keys;
  const std::string spec = order_by.empty() ? "start_time DESC" : order_by;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t end = spec.find(',', start);
    if (end == std::string::npos) end = spec.size();
    std::string part = spec.substr(start, end - start);
    std::vector<std::string> words;
    size_t i = 0;
    while (i < part.size()) {
      while (i < part.size() && std::isspace(static_cast<unsigned char>(part[i]))) ++i;
      const size_t w = i;
      while (i < part.size() && !std::isspace(static_cast<unsigned char>(part[i]))) ++i;
      if (i > w) words.push_back(part.substr(w, i - w));
    }
    if (words.empty() || words.size() > 2 ||
        (words.size() == 2 && lower(words[1]) != "asc" && lower(words[1]) != "desc")) {
      throw ConfigError("--order-by: expected KEY [ASC|DESC] (comma-separated), got '" + part +
                        "'");
    }
    keys.push_back(
        {parse_run_field(words[0], "--order-by"), words.size() == 2 && lower(words[1]) == "desc"});
    start = end + 1;
  }
  std::stable_sort(runs.begin(), runs.end(), [&](const RunRecord& a, const RunRecord& b) {
    for (const auto& k : keys) {
      const FieldValue va = field_value(a, k.field, now, host);
      const FieldValue vb = field_value(b, k.field, now, host);
      if (va.present != vb.present) return va.present;  // missing values last
      if (!va.present) continue;
      int cmp = 0;
      if (va.is_number && vb.is_number) {
        cmp = va.number < vb.number ? -1 : va.number > vb.number;
      } else {
        const auto na = as_number(va.text), nb = as_number(vb.text);
        cmp = na && nb ? (*na < *nb ? -1 : *na > *nb) : va.text.compare(vb.text);
      }
      if (cmp != 0) return k.descending ? cmp > 0 : cmp < 0;
    }
    return false;
  });
}

}  // namespace dtrain::tracking
