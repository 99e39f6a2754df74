// The model registry: references, versions, aliases, tags, verified downloads, refused folders,
// concurrent registration and the schema migration from a run-history-only workspace.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <thread>

#include "core/errors.h"
#include "core/file_util.h"
#include "models/models.h"
#include "test_util.h"
#include "tools/tracking/model_registry.h"

namespace dtrain::tracking {
namespace {

using dtrain::testing::read_text;
using dtrain::testing::TempDir;
using dtrain::testing::write_bytes;
namespace fs = std::filesystem;

/// A real (untrained) model folder: model.pt + model.json (+ a stand-in model.onnx).
void write_model(const fs::path& dir, int64_t width = 16) {
  RunConfig config;
  config.hidden_sizes = {width, 8};
  Model m = models::build_model(config, {784, 10});
  models::save_model_dir(dir, m, config, {{"validation_acc", 0.5}});
  write_bytes(dir / "model.onnx", "onnx bytes " + std::to_string(width));
}

template <class E>
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

TEST(ModelRef, ParsesEveryForm) {
  auto r = parse_model_ref("tf-dnn-mnist");
  EXPECT_EQ(r.name, "tf-dnn-mnist");
  EXPECT_FALSE(r.version);
  EXPECT_TRUE(r.alias.empty());
  r = parse_model_ref("tf-dnn-mnist:3");
  EXPECT_EQ(*r.version, 3);
  r = parse_model_ref("tf-dnn-mnist@production");
  EXPECT_EQ(r.alias, "production");
  r = parse_model_ref("models:/m.v2/12");
  EXPECT_EQ(r.name, "m.v2");
  EXPECT_EQ(*r.version, 12);
  r = parse_model_ref("models:/m@staging");
  EXPECT_EQ(r.alias, "staging");
  r = parse_model_ref("models:/m/latest");
  EXPECT_FALSE(r.version);
  EXPECT_TRUE(r.alias.empty());
  EXPECT_TRUE(is_model_uri("models:/m/1"));
  EXPECT_FALSE(is_model_uri("outputs/model"));
  for (const char* bad : {"", "models:/", "models:/m", "m:0", "m:-1", "m:x", "m@", "m@1a", "m:1@a",
                          "-m", "a/b", "models:/m/1/2", "m name"}) {
    EXPECT_THROW(parse_model_ref(bad), ConfigError) << bad;
  }
}

TEST(ModelRegistry, VersionsAliasesTagsAndDelete) {
  TempDir dir;
  write_model(dir / "m");
  Workspace ws(dir / "ws");
  ModelRegistry reg(ws);
  RegisterOptions o;
  o.name = "tf-dnn-mnist";
  o.tags = {{"stage", "dev"}};
  EXPECT_EQ(reg.register_model(dir / "m", o), 1);
  EXPECT_EQ(reg.register_model(dir / "m", o), 2);
  EXPECT_EQ(reg.register_model(dir / "m", o), 3);
  EXPECT_EQ(reg.names(), std::vector<std::string>{"tf-dnn-mnist"});

  ModelVersion v = reg.resolve(parse_model_ref("tf-dnn-mnist"));
  EXPECT_EQ(v.version, 3);  // no version or alias: the latest
  EXPECT_EQ(v.tags.at("stage"), "dev");
  EXPECT_EQ(v.metrics.at("validation_acc"), 0.5);  // from model.json when there is no run
  EXPECT_EQ(v.architecture.at("hidden_sizes"), nlohmann::json({16, 8}));
  ASSERT_EQ(v.files.size(), 3u);
  for (const auto& f : v.files) EXPECT_EQ(f.sha256, sha256_hex(read_text(dir / "m" / f.path)));

  reg.set_alias("tf-dnn-mnist", 1, "production");
  EXPECT_EQ(reg.resolve(parse_model_ref("tf-dnn-mnist@production")).version, 1);
  reg.set_alias("tf-dnn-mnist", 2, "production");  // moves
  EXPECT_EQ(reg.resolve(parse_model_ref("models:/tf-dnn-mnist@production")).version, 2);
  EXPECT_TRUE(reg.resolve(parse_model_ref("tf-dnn-mnist:1")).aliases.empty());
  EXPECT_NE(error_of<ConfigError>([&] {
              reg.set_alias("tf-dnn-mnist", 9, "x");
            }).find("its versions: 1, 2, 3"),
            std::string::npos);

  reg.set_tags("tf-dnn-mnist", 2, {{"owner", "me"}});
  EXPECT_EQ(reg.resolve(parse_model_ref("tf-dnn-mnist:2")).tags.at("owner"), "me");
  reg.delete_tag("tf-dnn-mnist", 2, "owner");
  EXPECT_FALSE(reg.resolve(parse_model_ref("tf-dnn-mnist:2")).tags.count("owner"));

  reg.delete_version("tf-dnn-mnist", 2);  // its alias goes with it
  const std::string gone =
      error_of<ConfigError>([&] { reg.resolve(parse_model_ref("tf-dnn-mnist@production")); });
  EXPECT_NE(gone.find("no alias 'production'"), std::string::npos) << gone;
  EXPECT_NE(error_of<ConfigError>([&] {
              reg.resolve(parse_model_ref("tf-dnn-mnist:2"));
            }).find("its versions: 1, 3"),
            std::string::npos);
  EXPECT_EQ(reg.register_model(dir / "m", o), 4) << "a deleted version's number is not reused";
  const std::string unknown = error_of<ConfigError>([&] { reg.resolve(parse_model_ref("nope")); });
  EXPECT_NE(unknown.find("registered models: tf-dnn-mnist"), std::string::npos) << unknown;
}

TEST(ModelRegistry, DownloadVerifiesAndDoesNotClobber) {
  TempDir dir;
  write_model(dir / "m");
  Workspace ws(dir / "ws");
  ModelRegistry reg(ws);
  RegisterOptions o;
  o.name = "m";
  reg.register_model(dir / "m", o);
  const ModelVersion v = reg.resolve(parse_model_ref("m:1"));
  reg.download(v, dir / "out", false);
  for (const char* f : {"model.pt", "model.json", "model.onnx"}) {
    EXPECT_EQ(read_text(dir / "out" / f), read_text(dir / "m" / f)) << f;
  }
  reg.download(v, dir / "out", false);  // identical files in the way are fine
  write_bytes(dir / "out" / "model.onnx", "mine");
  EXPECT_NE(error_of<ConfigError>([&] { reg.download(v, dir / "out", false); }).find("--force"),
            std::string::npos);
  EXPECT_EQ(read_text(dir / "out" / "model.onnx"), "mine");
  reg.download(v, dir / "out", true);
  EXPECT_EQ(read_text(dir / "out" / "model.onnx"), read_text(dir / "m" / "model.onnx"));

  std::string pt_sha;
  for (const auto& f : v.files) {
    if (f.path == "model.pt") pt_sha = f.sha256;
  }
  std::string bytes = read_text(ws.blob_path(pt_sha));
  bytes[100] ^= 0x55;
  write_bytes(ws.blob_path(pt_sha), bytes);
  const std::string e = error_of<DataError>([&] { reg.download(v, dir / "fresh", true); });
  EXPECT_NE(e.find(ws.blob_path(pt_sha).string()), std::string::npos) << e;
  EXPECT_NE(e.find("m:1 model.pt"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "fresh" / "model.json")) << "nothing written after a bad blob";
}

TEST(ModelRegistry, RefusesFoldersThatAreNotModels) {
  TempDir dir;
  Workspace ws(dir / "ws");
  ModelRegistry reg(ws);
  RegisterOptions o;
  o.name = "m";
  write_model(dir / "good");
  const std::string good_json = read_text(dir / "good" / "model.json");
  struct Case {
    std::string name;
    std::function<void(const fs::path&)> spoil;
    std::string file;
  };
  const std::vector<Case> cases = {
      {"no model.json", [](const fs::path& d) { fs::remove(d / "model.json"); }, "model.json"},
      {"random bytes", [](const fs::path& d) { write_bytes(d / "model.json", "\x01\x02junk"); },
       "model.json"},
      {"an array", [](const fs::path& d) { write_bytes(d / "model.json", "[1,2,3]"); },
       "model.json"},
      {"weights elsewhere",
       [&](const fs::path& d) {
         auto j = nlohmann::json::parse(good_json);
         j["weights"] = "/etc/passwd";
         write_bytes(d / "model.json", j.dump());
       },
       "model.json"},
      {"other architecture",
       [&](const fs::path& d) {
         auto j = nlohmann::json::parse(good_json);
         j["architecture"]["hidden_sizes"] = {32, 8};
         write_bytes(d / "model.json", j.dump());
       },
       "model.json"},
      {"other parameter shapes",
       [&](const fs::path& d) {
         auto j = nlohmann::json::parse(good_json);
         j["parameters"][0]["shape"] = {1, 2};
         write_bytes(d / "model.json", j.dump());
       },
       "model.json"},
      {"truncated weights",
       [](const fs::path& d) {
         write_bytes(d / "model.pt", read_text(d / "model.pt").substr(0, 500));
       },
       "model.pt"},
      {"no weights", [](const fs::path& d) { fs::remove(d / "model.pt"); }, "model.pt"},
  };
  for (const auto& c : cases) {
    const fs::path d = dir / ("case-" + std::to_string(&c - cases.data()));
    write_model(d);
    c.spoil(d);
    const std::string e = error_of<DataError>([&] { reg.register_model(d, o); });
    EXPECT_NE(e.find((d / c.file).string()), std::string::npos) << c.name << ": " << e;
  }
  EXPECT_TRUE(reg.names().empty()) << "nothing was registered";
  o.name = "bad name";
  EXPECT_THROW(reg.register_model(dir / "good", o), ConfigError);
}

TEST(ModelRegistry, ConcurrentRegistrationsGetConsecutiveVersions) {
  TempDir dir;
  write_model(dir / "m");
  { Workspace ws(dir / "ws"); }
  std::vector<int64_t> versions(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      Workspace ws(dir / "ws");
      RegisterOptions o;
      o.name = "shared";
      versions[i] = ModelRegistry(ws).register_model(dir / "m", o);
    });
  }
  for (auto& t : threads) t.join();
  std::sort(versions.begin(), versions.end());
  EXPECT_EQ(versions, (std::vector<int64_t>{1, 2, 3, 4}));
}

TEST(ModelRegistry, MigratesAWorkspaceFromBeforeTheRegistry) {
  TempDir dir;
  std::string run_id;
  {
    Workspace old(dir / "ws", true, /*schema_version=*/1);
    NewRun run;
    run.name = "before";
    run_id = old.create_run(run);
    sqlite3* db = old.db().handle();
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE name = 'model_versions'", -1,
                       &st, nullptr);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    EXPECT_EQ(sqlite3_column_int(st, 0), 0) << "a schema 1 workspace has no registry tables";
    sqlite3_finalize(st);
  }
  Workspace ws(dir / "ws", /*create=*/false);
  EXPECT_EQ(ws.db().query_integer("SELECT version FROM schema_version"), Workspace::kSchemaVersion);
  EXPECT_EQ(ws.get_run(run_id).name, "before");
  write_model(dir / "m");
  RegisterOptions o;
  o.name = "m";
  o.run_id = run_id;
  EXPECT_EQ(ModelRegistry(ws).register_model(dir / "m", o), 1);
}

}  // namespace
}  // namespace dtrain::tracking
