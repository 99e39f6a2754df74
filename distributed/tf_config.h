// TF_CONFIG: TensorFlow's cluster description, parsed as TensorFlow reads it.
#pragma once

#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace dtrain::distributed {

/// One network address "host:port" (IPv6 hosts in brackets: "[::1]:2222").
struct TaskAddress {
  std::string host;
  int port = 0;
  std::string text() const;
};

/// A validated TF_CONFIG. Jobs are normalised: "master" (TensorFlow's legacy name) becomes
/// "chief"; lists and sparse {index: address} objects both become index -> address maps.
struct TfConfig {
  std::map<std::string, std::map<int, TaskAddress>> cluster;
  std::string task_type;  ///< chief, worker, ps or evaluator ("master" given as chief)
  int task_index = 0;

  /// Parses and validates `text`; `source` names it in messages (e.g. "TF_CONFIG"). Every
  /// violation throws ConfigError naming the field: invalid JSON (with the position and a
  /// snippet), missing task, unknown type, index out of range or negative, a type absent from
  /// the cluster, duplicate or unparsable addresses, chief and master together, more than one
  /// chief or evaluator. `environment`, `rpc_layer` and unknown top-level keys are ignored.
  static TfConfig parse(const std::string& text, const std::string& source = "TF_CONFIG");
  /// Reads the TF_CONFIG environment variable (ConfigError if unset or empty).
  static TfConfig from_environment();

  /// Tasks of `job` (0 if absent).
  int num_tasks(const std::string& job) const;
  /// TensorFlow's rule: the chief task if the cluster has one, else worker 0.
  bool is_chief() const;
  /// The address this task serves on (evaluators may have none: then empty).
  std::string address() const;
  /// Throws ConfigError unless the cluster has at least one ps and one training task.
  void require_parameter_server_cluster() const;
  /// The resolved cluster and this task's role, as `dtrain cluster check` prints it.
  nlohmann::json to_json() const;
};

}  // namespace dtrain::distributed
