// The dtrain subcommands. Each returns the process exit code and throws dtrain::Error on failure.
#pragma once

namespace dtrain::cli {

int train_command(int argc, char** argv);
int eval_command(int argc, char** argv);
int data_command(int argc, char** argv);
int export_command(int argc, char** argv);
int cluster_command(int argc, char** argv);
int runs_command(int argc, char** argv);
int model_command(int argc, char** argv);
int sweep_command(int argc, char** argv);
int launch_command(int argc, char** argv);

}  // namespace dtrain::cli
