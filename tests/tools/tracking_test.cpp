// The workspace store, filters, artifacts, TensorBoard framing and the progress line.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "core/errors.h"
#include "core/file_util.h"
#include "test_util.h"
#include "tools/sinks/progress.h"
#include "tools/sinks/tensorboard.h"
#include "tools/sinks/tracking_sink.h"
#include "tools/tracking/run_filter.h"
#include "tools/tracking/workspace.h"

namespace dtrain::tracking {
namespace {

using dtrain::testing::TempDir;
namespace fs = std::filesystem;

NewRun sample_run(const std::string& name = "r") {
  NewRun run;
  run.experiment = "exp";
  run.name = name;
  run.world_size = 2;
  run.strategy = "ring";
  run.output_dir = "/tmp/outputs";
  run.params = {{"batch_size", "50"}, {"learning_rate", "0.01"}, {"optimizer", "sgd"}};
  run.tags = {{"team", "a"}};
  return run;
}

std::string expect_config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected ConfigError";
  return "";
}

TEST(Workspace, RunRoundTrip) {
  TempDir dir;
  Workspace ws(dir / "ws");
  const std::string id = ws.create_run(sample_run("first"));
  EXPECT_EQ(id.size(), 32u);
  ws.log_metrics(id, {{"train_loss", 1200, 1, 0.5, 1.0},
                      {"validation_acc", 1200, 1, 0.9, 1.0},
                      {"step_loss", 100, 1, 0.7, 1.0},
                      {"validation_acc", 2400, 2, 0.95, 2.0}});
  ws.finish_run(id, "completed", "");
  const RunRecord r = ws.get_run(id);
  EXPECT_EQ(r.name, "first");
  EXPECT_EQ(r.experiment, "exp");
  EXPECT_EQ(r.status, "completed");
  EXPECT_EQ(r.world_size, 2);
  EXPECT_EQ(r.strategy, "ring");
  EXPECT_EQ(r.host, host_name());
  EXPECT_EQ(r.pid, ::getpid());
  EXPECT_GT(r.end_time, 0);
  EXPECT_EQ(r.params.at("batch_size"), "50");
  EXPECT_EQ(r.tags.at("team"), "a");
  EXPECT_DOUBLE_EQ(r.metrics.at("validation_acc"), 0.95);  // the latest step
  EXPECT_DOUBLE_EQ(r.metrics.at("train_loss"), 0.5);
  const auto history = ws.metric_history(id, "validation_acc");
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].step, 1200);
  EXPECT_EQ(history[1].epoch, 2);

  // A second handle on the same folder sees the same run (it is in the database, not memory).
  Workspace again(dir / "ws", /*create=*/false);
  EXPECT_EQ(again.list_runs("", false).size(), 1u);
  EXPECT_EQ(again.list_runs("other", false).size(), 0u);
}

TEST(Workspace, GeneratedNamesAndIdsDiffer) {
  TempDir dir;
  Workspace ws(dir / "ws");
  NewRun run = sample_run("");
  const std::string a = ws.create_run(run), b = ws.create_run(run);
  EXPECT_NE(a, b);
  EXPECT_FALSE(ws.get_run(a).name.empty());
}

TEST(Workspace, ResumeRemovesLaterEpochsAndRunsAgain) {
  TempDir dir;
  Workspace ws(dir / "ws");
  const std::string id = ws.create_run(sample_run());
  for (int e = 1; e <= 3; ++e) {
    ws.log_metrics(id, {{"train_loss", e * 10, e, 1.0 / e, 0}, {"step_loss", e * 10 - 5, e, 1, 0}});
  }
  ws.finish_run(id, "killed", "stopped by SIGTERM");
  ws.resume_run(id, 2);
  const RunRecord r = ws.get_run(id);
  EXPECT_EQ(r.status, "running");
  EXPECT_TRUE(r.error.empty());
  EXPECT_EQ(r.end_time, 0);
  for (const auto& p : ws.metric_history(id)) EXPECT_LE(p.epoch, 2) << p.key;
  EXPECT_EQ(ws.metric_history(id).size(), 4u);
}

TEST(Workspace, LostWhenTheHeartbeatStopsOrTheProcessIsGone) {
  RunRecord r;
  r.status = "running";
  r.heartbeat = 1000;
  r.host = "elsewhere";
  r.pid = 12345;
  EXPECT_EQ(effective_status(r, 1000 + kLostAfterSeconds - 1, "here"), "running");
  EXPECT_EQ(effective_status(r, 1000 + kLostAfterSeconds + 1, "here"), "lost");
  // On this host, a process that no longer exists is lost at once.
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  r.host = "here";
  r.pid = child;
  EXPECT_EQ(effective_status(r, 1001, "here"), "lost");
  r.pid = ::getpid();
  EXPECT_EQ(effective_status(r, 1001, "here"), "running");
  r.status = "completed";
  EXPECT_EQ(effective_status(r, 1e12, "here"), "completed");
}

TEST(Workspace, ResolvesPrefixes) {
  TempDir dir;
  Workspace ws(dir / "ws");
  NewRun a = sample_run(), b = sample_run(), c = sample_run();
  a.id = "aaaa1111" + std::string(24, '0');
  b.id = "aaaa2222" + std::string(24, '0');
  c.id = "bbbb0000" + std::string(24, '0');
  for (const auto* r : {&a, &b, &c}) ws.create_run(*r);
  EXPECT_EQ(ws.resolve_run("aaaa1"), a.id);
  EXPECT_EQ(ws.resolve_run("b"), c.id);
  EXPECT_EQ(ws.resolve_run(c.id), c.id);
  EXPECT_NE(expect_config_error([&] { ws.resolve_run("aaaa"); }).find("ambiguous"),
            std::string::npos);
  EXPECT_NE(expect_config_error([&] { ws.resolve_run("cc"); }).find("no such run"),
            std::string::npos);
  EXPECT_NE(expect_config_error([&] { ws.resolve_run("AA'; DROP"); }).find("hex"),
            std::string::npos);
  EXPECT_NE(expect_config_error([&] { ws.resolve_run(""); }).find("hex"), std::string::npos);
}

TEST(Workspace, RefusesWhatIsNotADtrainWorkspace) {
  TempDir dir;
  // A file where the folder should be.
  dtrain::testing::write_bytes(dir / "file", "x");
  EXPECT_NE(expect_config_error([&] { Workspace ws(dir / "file"); }).find("not a folder"),
            std::string::npos);
  // Garbage as the database.
  dtrain::testing::write_bytes(dir / "garbage" / Workspace::kDatabaseName,
                               std::string(4096, '\x42'));
  const std::string garbage = expect_config_error([&] { Workspace ws(dir / "garbage"); });
  EXPECT_NE(garbage.find("workspace.db"), std::string::npos) << garbage;
  EXPECT_NE(garbage.find("not a dtrain workspace"), std::string::npos) << garbage;
  // Another program's SQLite database.
  fs::create_directories(dir / "other");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "other" / Workspace::kDatabaseName).c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "CREATE TABLE t (x)", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  EXPECT_NE(expect_config_error([&] { Workspace ws(dir / "other"); }).find("not a dtrain"),
            std::string::npos);
  // A workspace from a newer dtrain.
  { Workspace ws(dir / "newer"); }
  ASSERT_EQ(sqlite3_open((dir / "newer" / Workspace::kDatabaseName).c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "UPDATE schema_version SET version = 99", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  EXPECT_NE(expect_config_error([&] { Workspace ws(dir / "newer"); }).find("newer dtrain"),
            std::string::npos);
  // Reading a workspace that does not exist does not create one.
  EXPECT_NE(expect_config_error([&] { Workspace ws(dir / "absent", false); }).find("not exist"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "absent"));
  // A folder that cannot be created.
  EXPECT_NE(expect_config_error([&] { Workspace ws("/proc/dtrain-ws"); }).find("/proc/dtrain-ws"),
            std::string::npos);
}

TEST(Workspace, ConcurrentWritersLoseNothing) {
  TempDir dir;
  { Workspace ws(dir / "ws"); }
  constexpr int kWriters = 4, kBatches = 60, kPerBatch = 5;
  std::vector<std::string> ids(kWriters);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      try {
        Workspace ws(dir / "ws");  // each writer its own connection, as separate processes have
        ids[w] = ws.create_run(sample_run("w" + std::to_string(w)));
        for (int b = 0; b < kBatches; ++b) {
          std::vector<MetricPoint> points;
          for (int k = 0; k < kPerBatch; ++k) {
            points.push_back({"m" + std::to_string(k), b, b, static_cast<double>(w * 1000 + b), 0});
          }
          ws.log_metrics(ids[w], points);
          ws.heartbeat(ids[w]);
        }
        ws.finish_run(ids[w], "completed", "");
      } catch (const std::exception& e) {
        ADD_FAILURE() << "writer " << w << ": " << e.what();
        ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  Workspace ws(dir / "ws");
  for (int w = 0; w < kWriters; ++w) {
    EXPECT_EQ(ws.metric_history(ids[w]).size(), static_cast<size_t>(kBatches * kPerBatch));
    EXPECT_EQ(ws.get_run(ids[w]).status, "completed");
  }
}

// Several runs starting at once with a new workspace: each opens it (switching a new database
// to WAL needs it to itself, and SQLite says "database is locked" there without waiting).
TEST(Workspace, ManyOpeningANewWorkspaceAtOnceAllOpenIt) {
  constexpr int kOpeners = 8, kRounds = 10;
  for (int round = 0; round < kRounds; ++round) {
    TempDir dir;
    std::atomic<bool> go{false};
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < kOpeners; ++i) {
      threads.emplace_back([&, i] {
        while (!go) std::this_thread::yield();
        try {
          Workspace ws(dir / "ws");
          ws.create_run(sample_run("r" + std::to_string(i)));
        } catch (const std::exception& e) {
          ADD_FAILURE() << "round " << round << ", opener " << i << ": " << e.what();
          ++failures;
        }
      });
    }
    go = true;
    for (auto& t : threads) t.join();
    ASSERT_EQ(failures.load(), 0);
  }
}

TEST(Workspace, ArtifactsAreStoredOnceAndVerified) {
  TempDir dir;
  Workspace ws(dir / "ws");
  const std::string a = ws.create_run(sample_run()), b = ws.create_run(sample_run());
  dtrain::testing::write_bytes(dir / "model.pt", "weights");
  const ArtifactRecord ra = ws.add_artifact(a, "model/model.pt", dir / "model.pt");
  const ArtifactRecord rb = ws.add_artifact(b, "model/model.pt", dir / "model.pt");
  EXPECT_EQ(ra.sha256, rb.sha256);
  EXPECT_EQ(ra.sha256, sha256_hex("weights"));
  size_t blobs = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir / "ws" / "artifacts")) {
    blobs += e.is_regular_file();
  }
  EXPECT_EQ(blobs, 1u);  // identical files stored once
  EXPECT_EQ(ws.read_verified_blob(ra.sha256, ra.size, "run a"), "weights");
  dtrain::testing::write_bytes(ws.blob_path(ra.sha256), "weightz");
  try {
    ws.read_verified_blob(ra.sha256, ra.size, "run a model/model.pt");
    FAIL() << "a tampered blob was handed out";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(ws.blob_path(ra.sha256).string()), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("altered"), std::string::npos);
  }
  fs::remove(ws.blob_path(ra.sha256));
  EXPECT_THROW(ws.read_verified_blob(ra.sha256, ra.size, "run a"), DataError);
}

RunRecord filter_run(double acc, const std::string& batch, const std::string& team) {
  RunRecord r;
  r.id = "0123";
  r.name = "lucky-otter-1";
  r.status = "completed";
  r.start_time = 100;
  r.end_time = 200;
  r.metrics["validation_acc"] = acc;
  r.params["batch_size"] = batch;
  r.params["optimizer"] = "sgd";
  r.tags["team"] = team;
  return r;
}

TEST(RunFilter, MatchesMlflowStyleClauses) {
  const RunRecord r = filter_run(0.975, "50", "a");
  auto match = [&](const std::string& f) { return RunFilter(f).matches(r, 300, "h"); };
  EXPECT_TRUE(match(""));
  EXPECT_TRUE(
      match("metrics.validation_acc > 0.97 and params.batch_size = 50 and tags.team = 'a'"));
  EXPECT_FALSE(match("metrics.validation_acc > 0.98"));
  EXPECT_TRUE(match("metrics.validation_acc >= 0.975 AND metrics.validation_acc <= 0.975"));
  EXPECT_TRUE(match("params.batch-size != 100"));
  EXPECT_TRUE(match("params.optimizer = \"sgd\""));
  EXPECT_TRUE(match("params.optimizer LIKE 's%'"));
  EXPECT_FALSE(match("params.optimizer LIKE 'S%'"));
  EXPECT_TRUE(match("params.optimizer ILIKE 'S_D'"));
  EXPECT_TRUE(match("status = 'completed' and attributes.duration = 100"));
  EXPECT_TRUE(match("name like '%otter%'"));
  EXPECT_FALSE(match("metrics.missing > 0"));  // a run without the metric does not match
  EXPECT_FALSE(match("tags.team = 'b'"));
}

TEST(RunFilter, MalformedFiltersPointAtThePosition) {
  struct Case {
    std::string filter;
    std::string says;
    size_t position;
  };
  const std::vector<Case> cases = {
      {"metrics.validation_acc >", "expected a value", 25},
      {"metrics.validation_acc 0.9", "expected a comparison", 24},
      {"metrics.acc > 0.9 or params.x = 1", "OR is not supported", 19},
      {"metrics.acc > 0.9 and", "expected a clause", 22},
      {"foo.bar = 1", "foo.bar", 1},
      {"colour = 'red'", "unknown run attribute", 1},
      {"params.x = 'open", "unclosed quote", 12},
      {"params.x = abc", "expected a number or a 'quoted string'", 12},
      {"params.x LIKE 5", "quoted pattern", 15},
      {"> 3", "expected a field", 1},
  };
  for (const auto& c : cases) {
    const std::string e = expect_config_error([&] { RunFilter f(c.filter); });
    EXPECT_NE(e.find("--filter"), std::string::npos) << c.filter << ": " << e;
    EXPECT_NE(e.find(c.says), std::string::npos) << c.filter << ": " << e;
    EXPECT_NE(e.find("position " + std::to_string(c.position)), std::string::npos)
        << c.filter << ": " << e;
    EXPECT_NE(e.find(c.filter), std::string::npos) << "the message quotes the filter: " << e;
  }
}

TEST(RunFilter, OrdersRunsWithMissingValuesLast) {
  std::vector<RunRecord> runs = {filter_run(0.9, "100", "a"), filter_run(0.95, "25", "b"),
                                 filter_run(0.8, "50", "c")};
  runs[2].metrics.clear();
  order_runs(runs, "metrics.validation_acc DESC", 0, "h");
  EXPECT_EQ(runs[0].tags["team"], "b");
  EXPECT_EQ(runs[1].tags["team"], "a");
  EXPECT_EQ(runs[2].tags["team"], "c");
  order_runs(runs, "params.batch_size", 0, "h");  // numeric text compares as numbers
  EXPECT_EQ(runs[0].params["batch_size"], "25");
  EXPECT_EQ(runs[2].params["batch_size"], "100");
  EXPECT_THROW(order_runs(runs, "metrics.x sideways", 0, "h"), ConfigError);
  EXPECT_THROW(order_runs(runs, "nosuch", 0, "h"), ConfigError);
  runs[0].start_time = 1;
  runs[1].start_time = 3;
  runs[2].start_time = 2;
  order_runs(runs, "", 0, "h");  // default: newest first
  EXPECT_EQ(runs[0].start_time, 3);
  EXPECT_EQ(runs[2].start_time, 1);
}

}  // namespace
}  // namespace dtrain::tracking

namespace dtrain::sinks {
namespace {

TEST(TensorBoard, Crc32cIsCastagnoli) {
  EXPECT_EQ(crc32c("123456789"), 0xe3069283u);
  EXPECT_EQ(crc32c(""), 0u);
  const uint32_t crc = crc32c("abc");
  EXPECT_EQ(masked_crc32c("abc"), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

TEST(TensorBoard, RecordsAreFramed) {
  dtrain::testing::TempDir dir;
  std::filesystem::path file;
  {
    EventFileWriter w(dir / "tb");
    w.add_scalar("train/loss", 3, 0.25);
    file = w.path();
  }
  EXPECT_EQ(file.filename().string().rfind("events.out.tfevents.", 0), 0u);
  const std::string bytes = dtrain::testing::read_text(file);
  size_t pos = 0, records = 0;
  while (pos < bytes.size()) {
    ASSERT_LE(pos + 12, bytes.size());
    uint64_t len = 0;
    for (int i = 7; i >= 0; --i) len = (len << 8) | static_cast<unsigned char>(bytes[pos + i]);
    const std::string len_bytes = bytes.substr(pos, 8);
    uint32_t len_crc = 0;
    for (int i = 3; i >= 0; --i)
      len_crc = (len_crc << 8) | static_cast<unsigned char>(bytes[pos + 8 + i]);
    EXPECT_EQ(len_crc, masked_crc32c(len_bytes));
    ASSERT_LE(pos + 12 + len + 4, bytes.size());
    uint32_t data_crc = 0;
    for (int i = 3; i >= 0; --i) {
      data_crc = (data_crc << 8) | static_cast<unsigned char>(bytes[pos + 12 + len + i]);
    }
    EXPECT_EQ(data_crc, masked_crc32c(bytes.substr(pos + 12, len)));
    pos += 12 + len + 4;
    ++records;
  }
  EXPECT_EQ(records, 2u);  // the version event and one scalar
  EXPECT_NE(bytes.find("brain.Event:2"), std::string::npos);
  EXPECT_NE(bytes.find("train/loss"), std::string::npos);
}

TEST(Progress, LineShowsStepsRateLossAndEta) {
  ProgressSink sink(5, stderr, 0.1);
  StepProgress p;
  p.epoch = 2;
  p.step = 300;
  p.steps_in_epoch = 1200;
  p.samples = 15000;
  p.running_loss = 0.1234;
  p.elapsed_seconds = 10;
  const std::string line = sink.line(p);
  EXPECT_NE(line.find("epoch 2/5"), std::string::npos) << line;
  EXPECT_NE(line.find("step 300/1200"), std::string::npos) << line;
  EXPECT_NE(line.find("1500 samples/s"), std::string::npos) << line;
  EXPECT_NE(line.find("loss 0.1234"), std::string::npos) << line;
  EXPECT_NE(line.find("0:10 elapsed, ETA 0:30"), std::string::npos) << line;
  EXPECT_EQ(format_duration(3725), "1:02:05");
  EXPECT_TRUE(sink.wants_step(1));  // first step of an epoch always draws
}

TEST(Progress, RedrawsAtMostTenTimesASecond) {
  std::FILE* sink_file = std::tmpfile();
  ProgressSink sink(1, sink_file, 0.1);
  sink.on_epoch_begin(1, 1000000);
  int draws = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t s = 1; std::chrono::steady_clock::now() - start < std::chrono::milliseconds(350);
       ++s) {
    if (sink.wants_step(s)) {
      StepProgress p;
      p.step = s;
      sink.on_step(p);
      ++draws;
    }
  }
  EXPECT_GE(draws, 3);
  EXPECT_LE(draws, 5);
  std::fclose(sink_file);
}

TEST(TrackingSink, EpochPointsUseTheMetricsJsonlKeys) {
  EpochMetrics m;
  m.epoch = 3;
  m.global_step = 3600;
  m.validation_acc = 0.97;
  const auto points = TrackingSink::epoch_points(m, 5.0);
  bool found = false;
  for (const auto& p : points) {
    EXPECT_EQ(p.step, 3600);
    EXPECT_EQ(p.epoch, 3);
    EXPECT_NE(p.key, "epoch");
    if (p.key == "validation_acc") found = p.value == 0.97;
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace dtrain::sinks
