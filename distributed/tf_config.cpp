#include "distributed/tf_config.h"

#include <fmt/ranges.h>
#include <cstdlib>
#include <set>

#include "core/errors.h"

namespace dtrain::distributed {

namespace {

const std::set<std::string> kJobs = {"chief", "worker", "ps", "evaluator", "master"};

[[noreturn]] void fail(const std::string& source, const std::string& field,
                       const std::string& what) {
  throw ConfigError(source + ": " + field + ": " + what);
}

TaskAddress parse_address(const std::string& source, const std::string& field,
                          const nlohmann::json& v) {
  if (!v.is_string()) fail(source, field, "expected a \"host:port\" string, got " + v.dump());
  const std::string text = v.get<std::string>();
  TaskAddress a;
  std::string port;
  if (!text.empty() && text.front() == '[') {  // [ipv6]:port
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      fail(source, field, "unparsable address '" + text + "' (expected [ipv6]:port)");
    }
    a.host = text.substr(0, close + 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      fail(source, field, "unparsable address '" + text + "' (expected host:port)");
    }
    a.host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (a.host.empty() || a.host == "[]") fail(source, field, "address '" + text + "' has no host");
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
      std::stoi(port) > 65535) {
    fail(source, field, "address '" + text + "' has no valid port (expected 1-65535)");
  }
  a.port = std::stoi(port);
  return a;
}

int parse_index(const std::string& source, const std::string& field, const nlohmann::json& v) {
  long long index = 0;
  if (v.is_number_integer()) {
    index = v.get<long long>();
  } else if (v.is_string()) {
    const std::string s = v.get<std::string>();
    // An optional '-' and 1 to 10 digits (what stoll then reads without throwing).
    const size_t start = !s.empty() && s[0] == '-' ? 1 : 0;
    const bool digits = s.size() > start && s.size() - start <= 10 &&
                        s.find_first_not_of("0123456789", start) == std::string::npos;
    if (!digits)
      fail(source, field, "expected an integer (or a string holding one), got " + v.dump());
    index = std::stoll(s);
  } else {
    fail(source, field, "expected an integer (or a string holding one), got " + v.dump());
  }
  if (index < 0) fail(source, field, "must not be negative, got " + std::to_string(index));
  if (index > 1000000) fail(source, field, "absurdly large: " + std::to_string(index));
  return static_cast<int>(index);
}

std::string json_error_context(const std::string& text, size_t byte) {
  const size_t from = byte > 20 ? byte - 20 : 0;
  std::string snippet = text.substr(from, 40);
  for (char& c : snippet)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  return "near '" + snippet + "'";
}

}  // namespace

std::string TaskAddress::text() const { return host + ":" + std::to_string(port); }

TfConfig TfConfig::parse(const std::string& text, const std::string& source) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw ConfigError(source + " is empty (expected a JSON object with \"cluster\" and \"task\")");
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw ConfigError(source + ": invalid JSON at byte " + std::to_string(e.byte) + " " +
                      json_error_context(text, e.byte > 0 ? e.byte - 1 : 0) + ": " + e.what());
  } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for a double
    throw ConfigError(source + ": invalid JSON: " + e.what());
  }
  if (!j.is_object())
    fail(source, "top level", "expected a JSON object, got " + std::string(j.type_name()));

  TfConfig c;
  const auto cluster = j.find("cluster");
  if (cluster == j.end() || !cluster->is_object() || cluster->empty()) {
    fail(source, "cluster", "missing or empty (expected {\"worker\": [\"host:port\", ...], ...})");
  }
  std::map<std::string, std::string> seen;  // address -> where
  for (auto it = cluster->begin(); it != cluster->end(); ++it) {
    const std::string job = it.key();
    const std::string field = "cluster." + job;
    if (!kJobs.count(job)) {
      fail(source, field, "unknown job type (expected chief, worker, ps, evaluator or master)");
    }
    std::map<int, TaskAddress> tasks;
    if (it->is_array()) {
      for (size_t i = 0; i < it->size(); ++i) {
        tasks[static_cast<int>(i)] =
            parse_address(source, field + "[" + std::to_string(i) + "]", (*it)[i]);
      }
    } else if (it->is_object()) {  // sparse: {"0": "host:port", "3": "host:port"}
      for (auto t = it->begin(); t != it->end(); ++t) {
        const int index =
            parse_index(source, field + " key '" + t.key() + "'", nlohmann::json(t.key()));
        tasks[index] = parse_address(source, field + "." + t.key(), t.value());
      }
    } else {
      fail(source, field, "expected a list of \"host:port\" or an object {index: \"host:port\"}");
    }
    if (tasks.empty()) fail(source, field, "has no tasks");
    for (const auto& [index, address] : tasks) {
      const std::string where = field + "[" + std::to_string(index) + "]";
      auto [pos, fresh] = seen.emplace(address.text(), where);
      if (!fresh)
        fail(source, where, "duplicate address " + address.text() + " (also " + pos->second + ")");
    }
    const std::string name = job == "master" ? "chief" : job;
    if (c.cluster.count(name))
      fail(source, "cluster",
           "has both \"chief\" and \"master\" (master is the legacy name of chief; give one)");
    c.cluster[name] = std::move(tasks);
  }
  for (const char* single : {"chief", "evaluator"}) {
    auto job = c.cluster.find(single);
    if (job != c.cluster.end() && (job->second.size() != 1 || job->second.begin()->first != 0)) {
      fail(source, std::string("cluster.") + single, "at most one task, with index 0");
    }
  }

  const auto task = j.find("task");
  if (task == j.end() || !task->is_object())
    fail(source, "task", "missing (expected {\"type\": ..., \"index\": ...})");
  const auto type = task->find("type");
  if (type == task->end() || !type->is_string())
    fail(source, "task.type", "missing (expected chief, worker, ps or evaluator)");
  c.task_type = type->get<std::string>();
  if (!kJobs.count(c.task_type)) {
    fail(source, "task.type",
         "unknown type '" + c.task_type + "' (expected chief, worker, ps, evaluator or master)");
  }
  if (c.task_type == "master") c.task_type = "chief";
  const auto index = task->find("index");
  c.task_index = index == task->end() ? 0 : parse_index(source, "task.index", *index);
  const auto job = c.cluster.find(c.task_type);
  if (job == c.cluster.end()) {
    // TensorFlow allows the evaluator outside the cluster: nobody dials it.
    if (c.task_type != "evaluator") {
      fail(source, "task.type", "'" + c.task_type + "' is not a job in cluster");
    }
    if (c.task_index != 0)
      fail(source, "task.index", "the evaluator has index 0, got " + std::to_string(c.task_index));
  } else if (!job->second.count(c.task_index)) {
    std::vector<int> indices;
    for (const auto& [i, a] : job->second) indices.push_back(i);
    const std::string have = fmt::format("{}", fmt::join(indices, ", "));
    fail(source, "task.index",
         std::to_string(c.task_index) + " is out of range for job '" + c.task_type +
             "' (indices: " + have + ")");
  }
  return c;
}

TfConfig TfConfig::from_environment() {
  const char* text = std::getenv("TF_CONFIG");
  if (text == nullptr)
    throw ConfigError(
        "TF_CONFIG is not set (expected the cluster as JSON, as TensorFlow reads it)");
  return parse(text, "TF_CONFIG");
}

int TfConfig::num_tasks(const std::string& job) const {
  auto it = cluster.find(job);
  return it == cluster.end() ? 0 : static_cast<int>(it->second.size());
}

bool TfConfig::is_chief() const {
  if (cluster.count("chief")) return task_type == "chief";
  return task_type == "worker" && task_index == cluster.at("worker").begin()->first;
}

std::string TfConfig::address() const {
  auto job = cluster.find(task_type);
  if (job == cluster.end()) return "";
  return job->second.at(task_index).text();
}

void TfConfig::require_parameter_server_cluster() const {
  if (num_tasks("ps") == 0)
    throw ConfigError("TF_CONFIG: cluster has no \"ps\" job (PS training needs at least one)");
  if (num_tasks("worker") + num_tasks("chief") == 0) {
    throw ConfigError(
        "TF_CONFIG: cluster has no \"worker\" job (PS training needs at least one worker)");
  }
}

nlohmann::json TfConfig::to_json() const {
  nlohmann::json jobs = nlohmann::json::object();
  for (const auto& [job, tasks] : cluster) {
    for (const auto& [i, a] : tasks) jobs[job][std::to_string(i)] = a.text();
  }
  const std::string role = is_chief() ? "chief" : task_type;
  return {{"cluster", jobs},
          {"task", {{"type", task_type}, {"index", task_index}}},
          {"role", role},
          {"is_chief", is_chief()},
          {"address", address()},
          {"num_ps", num_tasks("ps")},
          {"num_workers", num_tasks("worker")},
          {"has_chief_job", num_tasks("chief") > 0},
          {"has_evaluator", num_tasks("evaluator") > 0 || task_type == "evaluator"}};
}

}  // namespace dtrain::distributed
