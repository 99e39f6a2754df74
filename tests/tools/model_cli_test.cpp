// `dtrain model ...`, `train --register-model` and models:/ URIs in eval and export, as a user
// runs them (the seed's flow: train, register tf-dnn-mnist, download to ./model).
#include <gtest/gtest.h>

#include <sstream>

#include "core/subprocess.h"
#include "run_outputs.h"
#include "test_util.h"

namespace dtrain::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

std::string q(const std::string& s) { return "'" + s + "'"; }

CommandResult dt(const fs::path& cwd, const std::string& args, int timeout = 300) {
  return run_command(
      "env -C " + q(cwd.string()) + " DTRAIN_WORKSPACE=ws " + dtrain_binary() + " " + args,
      timeout);
}

/// The JSON document in a command's output: from the first line that opens an object or array
/// (log lines start with "[HH:MM:SS").
Json json_of(const CommandResult& r) {
  size_t line = 0;
  while (line < r.output.size()) {
    const std::string rest = r.output.substr(line, 2);
    if (rest[0] == '{' || rest == "[\n" || rest == "[{" || rest == "[]") {
      std::istringstream in(r.output.substr(line));
      Json j;
      in >> j;  // one document; log lines after it are left unread
      return j;
    }
    const size_t next = r.output.find('\n', line);
    if (next == std::string::npos) break;
    line = next + 1;
  }
  ADD_FAILURE() << "no JSON in: " << r.output;
  return Json();
}

TEST(ModelCli, RegisterVersionAliasDownloadAndUseEverywhere) {
  TempDir dir;
  write_synthetic_mnist(dir / "data", 3000, 500, 5);
  const std::string data = " --data-dir " + q((dir / "data").string());
  auto r = dt(dir, "train" + data + " --epochs 1 --register-model tf-dnn-mnist");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("tf-dnn-mnist version 1"), std::string::npos) << r.output;
  const std::string run_id = Json::parse(read_text(dir / "outputs" / "run.json")).at("run_id");

  // From the run (the seed's model_path), then from a folder: versions 2 and 3.
  r = dt(dir, "model register --name tf-dnn-mnist --run " + run_id.substr(0, 8) +
                  " --path outputs/model --tag stage=dev --description 'from the run'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("version 2"), std::string::npos) << r.output;
  r = dt(dir, "model register --name tf-dnn-mnist --path outputs/model");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("version 3"), std::string::npos) << r.output;

  r = dt(dir, "model show tf-dnn-mnist:2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Json v2 = json_of(r);
  EXPECT_EQ(v2.at("run_id"), run_id);
  EXPECT_EQ(v2.at("tags").at("stage"), "dev");
  EXPECT_EQ(v2.at("description"), "from the run");
  const double recorded = v2.at("metrics").at("validation_acc");
  EXPECT_DOUBLE_EQ(recorded, last_metrics(dir / "outputs").at("validation_acc").get<double>());
  EXPECT_EQ(v2.at("files").size(), 3u);

  // Alias, moved; download by alias; bytes as trained.
  ASSERT_EQ(dt(dir, "model alias tf-dnn-mnist 1 production").exit_code, 0);
  ASSERT_EQ(dt(dir, "model alias tf-dnn-mnist 2 production").exit_code, 0);
  r = dt(dir, "model show tf-dnn-mnist@production --json");
  EXPECT_EQ(json_of(r).at("version"), 2);
  r = dt(dir, "model download tf-dnn-mnist@production --to model");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* f : {"model.pt", "model.json", "model.onnx"}) {
    EXPECT_EQ(read_text(dir / "model" / f), read_text(dir / "outputs" / "model" / f)) << f;
  }
  write_bytes(dir / "model" / "model.json", "{}");
  r = dt(dir, "model download tf-dnn-mnist@production --to model");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--force"), std::string::npos) << r.output;
  EXPECT_EQ(dt(dir, "model download tf-dnn-mnist@production --to model --force").exit_code, 0);
  r = dt(dir, "model download tf-dnn-mnist@production --to model/model.pt");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("not a folder"), std::string::npos) << r.output;

  // eval and export take models:/ URIs.
  r = dt(dir, "eval --model models:/tf-dnn-mnist@production" + data);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_DOUBLE_EQ(json_of(r).at("accuracy").get<double>(), recorded);
  r = dt(dir, "export --checkpoint models:/tf-dnn-mnist/3 --onnx exported.onnx");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_text(dir / "exported.onnx"), read_text(dir / "outputs" / "model" / "model.onnx"));

  // Unknown names, versions and aliases: exit 2 listing what exists.
  r = dt(dir, "eval --model models:/tf-dnn-mnist/9" + data);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("its versions: 1, 2, 3"), std::string::npos) << r.output;
  r = dt(dir, "model download models:/tf-dnn-mnist@staging --to x");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("production -> 2"), std::string::npos) << r.output;
  r = dt(dir, "export --checkpoint models:/nope/1 --onnx x.onnx");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("registered models: tf-dnn-mnist"), std::string::npos) << r.output;

  // Delete takes the alias with it; list shows what is left.
  ASSERT_EQ(dt(dir, "model delete tf-dnn-mnist:2").exit_code, 0);
  r = dt(dir, "model show tf-dnn-mnist@production");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = dt(dir, "model list --json");
  EXPECT_EQ(json_of(r)[0].at("versions"), Json({1, 3}));

  // A folder that is not a model is refused, naming the file.
  write_bytes(dir / "notamodel" / "model.json", "[1,2,3]");
  r = dt(dir, "model register --name x --path notamodel");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("notamodel/model.json"), std::string::npos) << r.output;
  // And so is a model.json that points elsewhere, wherever a model is read.
  Json spoiled = Json::parse(read_text(dir / "outputs" / "model" / "model.json"));
  spoiled["weights"] = "/etc/passwd";
  fs::copy(dir / "outputs" / "model", dir / "spoiled");
  write_bytes(dir / "spoiled" / "model.json", spoiled.dump());
  r = dt(dir, "eval --model spoiled" + data);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("spoiled/model.json"), std::string::npos) << r.output;

  // --register-model needs a workspace and a valid name.
  r = dt(dir, "train" + data + " --epochs 1 --workspace none --register-model m");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = dt(dir, "train" + data + " --epochs 1 --register-model 'bad name'");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

TEST(ModelCli, FourProcessesRegisteringAtOnceGetDistinctVersions) {
  TempDir dir;
  write_synthetic_mnist(dir / "data", 600, 100, 6);
  ASSERT_EQ(dt(dir, "train --data-dir data --epochs 1").exit_code, 0);
  std::vector<std::unique_ptr<Subprocess>> procs;
  std::vector<std::string> outputs(4);
  std::vector<std::unique_ptr<std::mutex>> locks;
  for (int i = 0; i < 4; ++i) {
    ProcessOptions o;
    o.argv = {dtrain_binary(), "model", "register", "--name", "shared", "--path", "outputs/model"};
    o.env = {{"DTRAIN_WORKSPACE", "ws"}};
    o.cwd = dir.path();
    o.output = ProcessOptions::Output::kLines;
    locks.push_back(std::make_unique<std::mutex>());
    o.on_line = [&, i](const std::string& line) {
      std::lock_guard<std::mutex> lock(*locks[i]);
      outputs[i] += line + "\n";
    };
    procs.push_back(std::make_unique<Subprocess>(std::move(o)));
  }
  std::set<int> versions;
  for (int i = 0; i < 4; ++i) {
    const auto code = procs[i]->wait_for(std::chrono::seconds(120));
    ASSERT_TRUE(code.has_value());
    std::lock_guard<std::mutex> lock(*locks[i]);
    EXPECT_EQ(*code, 0) << outputs[i];
    const size_t at = outputs[i].find("version ");
    ASSERT_NE(at, std::string::npos) << outputs[i];
    versions.insert(std::stoi(outputs[i].substr(at + 8)));
  }
  EXPECT_EQ(versions, (std::set<int>{1, 2, 3, 4}));
}

}  // namespace
}  // namespace dtrain::testing
