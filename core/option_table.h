// One declaration per run option: flag name, JSON key, type, default, help, checks, and whether
// every rank must agree on it. Flags, the JSON round trip, validation and the cross-rank
// consistency check are all derived from the table (RunConfig's is `run_options()`).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/errors.h"

namespace dtrain {

struct RunConfig;
/// RunConfig{} (the defaults), without needing its definition here.
const RunConfig& default_run_config();

/// One option of RunConfig. Built with `option(...)` below; read-only afterwards.
struct ConfigOption {
  std::string flag;      ///< command-line name without "--" (also a sweep parameter name)
  std::string json_key;  ///< key in run.json/checkpoints; empty: flag only (writes another field)
  std::string help;
  std::string type_name;  ///< "integer", "number", "text", "integer list" (for help and sweeps)
  std::vector<std::string> aliases;    ///< other flag names for the same option
  std::vector<std::string> choices;    ///< allowed values of a text option (empty: any)
  std::vector<std::string> conflicts;  ///< flags that must not be given together with this one
  bool required = false;
  bool shared = true;          ///< every rank / PS task must agree on it
  bool defines_model = false;  ///< part of the model's identity (compared on checkpoint load)
  bool numeric = false;        ///< takes a number (sweeps may sample it from a distribution)
  bool boolean = false;        ///< a switch: `--flag` alone means true
  bool repeatable = false;     ///< may be given many times; each occurrence adds one element
  std::string env;             ///< environment variable used when the flag is not given

  /// Parses a flag value into `config`; throws ConfigError "--flag: expected ..., got '...'".
  std::function<void(RunConfig& config, const std::string& text)> parse;
  /// The value in `config` as flag text (for defaults in --help and the README).
  std::function<std::string(const RunConfig& config)> text;
  std::function<nlohmann::json(const RunConfig& config)> to_json;
  /// Throws ConfigError naming the JSON key on a wrong type.
  std::function<void(RunConfig& config, const nlohmann::json& value)> from_json;
  /// Empty when `config`'s value is valid, else what was expected.
  std::function<std::optional<std::string>(const RunConfig& config)> check;

  /// The default as flag text; empty when the option has no default (required or optional).
  std::string default_text;
};

/// "a, b or c".
std::string join_alternatives(const std::vector<std::string>& values);

namespace detail {

/// Flag-text parsing and formatting per field type. Parsers throw ConfigError naming the flag.
void parse_value(const std::string& flag, const std::string& text, std::string& out);
void parse_value(const std::string& flag, const std::string& text, int64_t& out);
void parse_value(const std::string& flag, const std::string& text, int& out);
void parse_value(const std::string& flag, const std::string& text, uint64_t& out);
void parse_value(const std::string& flag, const std::string& text, double& out);
void parse_value(const std::string& flag, const std::string& text, std::vector<int64_t>& out);
void parse_value(const std::string& flag, const std::string& text, bool& out);
/// One element (repeatable options add it to the list).
void parse_value(const std::string& flag, const std::string& text, std::vector<std::string>& out);
std::string format_value(const std::string& value);
std::string format_value(int64_t value);
std::string format_value(int value);
std::string format_value(uint64_t value);
std::string format_value(double value);
std::string format_value(const std::vector<int64_t>& value);
std::string format_value(bool value);
std::string format_value(const std::vector<std::string>& value);
/// How a field's type is named in help text and sweep errors.
template <class T>
constexpr const char* type_name() {
  if constexpr (std::is_same_v<T, std::string>) {
    return "text";
  } else if constexpr (std::is_same_v<T, bool>) {
    return "switch";
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    return "text list";
  } else if constexpr (std::is_floating_point_v<T>) {
    return "number";
  } else if constexpr (std::is_integral_v<T>) {
    return "integer";
  } else {
    return "integer list";
  }
}
/// Throws ConfigError "run configuration: field 'key' has the wrong type: ...".
[[noreturn]] void wrong_json_type(const std::string& key, const std::exception& e);

}  // namespace detail

/// Builder for one table row: `option("batch-size", &RunConfig::batch_size, "help").check(...)`.
/// Defined inline so that the table (core/run_config.cpp) instantiates it for its field types.
template <class T>
class OptionBuilder {
 public:
  OptionBuilder(std::string flag, T RunConfig::*member, std::string help) : member_(member) {
    row_.flag = std::move(flag);
    row_.json_key = row_.flag;
    for (char& c : row_.json_key) c = c == '-' ? '_' : c;
    row_.help = std::move(help);
    row_.type_name = detail::type_name<T>();
    row_.numeric = std::is_arithmetic_v<T> && !std::is_same_v<T, bool>;
    row_.boolean = std::is_same_v<T, bool>;
    row_.repeatable = std::is_same_v<T, std::vector<std::string>>;
  }

  /// The value must satisfy `ok`; otherwise "--flag: expected <expected>, got <value>".
  OptionBuilder& check(std::function<bool(const T& value, const RunConfig& config)> ok,
                       std::string expected) {
    checks_.emplace_back(std::move(ok), std::move(expected));
    return *this;
  }
  OptionBuilder& check(std::function<bool(const T& value)> ok, std::string expected) {
    return check([ok](const T& v, const RunConfig&) { return ok(v); }, std::move(expected));
  }
  /// Text options: one of `values` ("a, b or c" in the message).
  OptionBuilder& choices(std::vector<std::string> values) {
    row_.choices = values;
    const std::string expected = join_alternatives(values);
    return check(
        [values](const T& v) { return std::find(values.begin(), values.end(), v) != values.end(); },
        expected);
  }
  OptionBuilder& json_key(std::string key) {
    row_.json_key = std::move(key);
    return *this;
  }
  OptionBuilder& alias(std::string name) {
    row_.aliases.push_back(std::move(name));
    return *this;
  }
  OptionBuilder& conflicts_with(std::string flag) {
    row_.conflicts.push_back(std::move(flag));
    return *this;
  }
  OptionBuilder& required() {
    row_.required = true;
    return no_default();
  }
  /// Differs per host or process (paths, thread counts, timeouts of one process): not compared
  /// across ranks.
  OptionBuilder& local() {
    row_.shared = false;
    return *this;
  }
  OptionBuilder& defines_model() {
    row_.defines_model = true;
    return *this;
  }
  /// When the flag is not given, the environment variable `name` (if set) supplies the value.
  OptionBuilder& env(std::string name) {
    row_.env = std::move(name);
    return *this;
  }
  /// No default shown: the option is unset unless given.
  OptionBuilder& no_default() {
    no_default_ = true;
    return *this;
  }
  /// A flag that stores into a field another option owns (one element of a list): no JSON key,
  /// no checks of its own beyond those given here.
  OptionBuilder& writes(std::function<void(RunConfig&, const T&)> store,
                        std::function<T(const RunConfig&)> load) {
    store_ = std::move(store);
    load_ = std::move(load);
    row_.json_key.clear();
    return *this;
  }

  operator ConfigOption() const {  // NOLINT: rows convert implicitly in the table initializer
    ConfigOption r = row_;
    const auto member = member_;
    auto store = store_ ? store_
                        : std::function<void(RunConfig&, const T&)>(
                              [member](RunConfig& c, const T& v) { c.*member = v; });
    auto load = load_ ? load_ : std::function<T(const RunConfig&)>([member](const RunConfig& c) {
      return c.*member;
    });
    const std::string flag = r.flag, key = r.json_key;
    auto checks = checks_;
    // A row that writes into another row's field checks its own value when parsed; the owning
    // row checks the field as a whole in validate().
    const bool check_on_parse = static_cast<bool>(store_);
    const bool repeatable = r.repeatable;
    r.parse = [flag, store, load, checks, check_on_parse, repeatable](RunConfig& c,
                                                                      const std::string& text) {
      T v{};
      if constexpr (std::is_same_v<T, std::vector<std::string>>) {
        // Each occurrence of a repeatable flag adds one element to what is there.
        if (repeatable) v = load(c);
      }
      detail::parse_value(flag, text, v);
      if (check_on_parse) {
        for (const auto& [ok, expected] : checks) {
          if (!ok(v, c)) {
            throw ConfigError("--" + flag + ": expected " + expected + ", got " +
                              detail::format_value(v));
          }
        }
      }
      store(c, v);
    };
    r.text = [load](const RunConfig& c) { return detail::format_value(load(c)); };
    if (!key.empty()) {
      r.to_json = [load](const RunConfig& c) { return nlohmann::json(load(c)); };
      r.from_json = [key, store](RunConfig& c, const nlohmann::json& j) {
        try {
          store(c, j.get<T>());
        } catch (const nlohmann::json::exception& e) {
          detail::wrong_json_type(key, e);
        }
      };
    }
    r.check = [checks, load, check_on_parse](const RunConfig& c) -> std::optional<std::string> {
      if (check_on_parse) return std::nullopt;
      const T v = load(c);
      for (const auto& [ok, expected] : checks) {
        if (!ok(v, c)) return expected + ", got " + detail::format_value(v);
      }
      return std::nullopt;
    };
    if (!no_default_) r.default_text = r.text(default_run_config());
    return r;
  }

 private:
  ConfigOption row_;
  T RunConfig::*member_;
  std::vector<std::pair<std::function<bool(const T&, const RunConfig&)>, std::string>> checks_;
  std::function<void(RunConfig&, const T&)> store_;
  std::function<T(const RunConfig&)> load_;
  bool no_default_ = false;
};

template <class T>
OptionBuilder<T> option(std::string flag, T RunConfig::*member, std::string help) {
  return OptionBuilder<T>(std::move(flag), member, std::move(help));
}

/// A row with no field of its own: give it `.writes(store, load)`.
template <class T>
OptionBuilder<T> flag_only(std::string flag, std::string help) {
  return OptionBuilder<T>(std::move(flag), nullptr, std::move(help));
}

/// The table of RunConfig, in help order.
const std::vector<ConfigOption>& run_options();
/// The row for `flag` (or one of its aliases); nullptr if there is none.
const ConfigOption* find_run_option(const std::string& flag);

/// The table as a Markdown table (flag | default | must agree across ranks | meaning): README.md
/// holds exactly this between its `train-flags` markers (a test checks it).
std::string options_markdown(const std::vector<ConfigOption>& table);

}  // namespace dtrain
