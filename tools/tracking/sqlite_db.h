// A small RAII wrapper over SQLite: connection, prepared statement, transaction. Only bound
// parameters: no SQL is ever built from text a user typed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace dtrain::tracking {

class Db;

/// One prepared statement. Bind with 1-based indices, step() until it returns false.
class Statement {
 public:
  Statement(Db& db, std::string_view sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, std::string_view value);
  Statement& bind(int index, const char* value) { return bind(index, std::string_view(value)); }
  Statement& bind(int index, int64_t value);
  Statement& bind(int index, int value) { return bind(index, static_cast<int64_t>(value)); }
  Statement& bind(int index, double value);
  Statement& bind_null(int index);

  /// Binds every argument in order, from index 1.
  template <class... Args>
  Statement& bind_all(const Args&... args) {
    int i = 0;
    (bind(++i, args), ...);
    return *this;
  }

  /// True while there is a row to read.
  bool step();
  /// Runs a statement that returns no rows.
  void run() {
    while (step()) {
    }
  }
  void reset();

  bool is_null(int column) const;
  int64_t integer(int column) const;
  double real(int column) const;
  std::string text(int column) const;

 private:
  Db& db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string sql_;
};

/// One connection in WAL mode with a busy timeout, so concurrent writers wait instead of failing.
/// Errors throw IoError naming the database file and the SQLite message; a file that is not an
/// SQLite database throws ConfigError.
class Db {
 public:
  /// Opens (creating if `create`) the database file at `path`.
  Db(const std::filesystem::path& path, bool create);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(std::string_view sql);
  /// The first column of the first row of `sql`, if there is a row.
  std::optional<int64_t> query_integer(std::string_view sql);

  /// Runs `body` inside BEGIN IMMEDIATE ... COMMIT (rolled back if it throws). IMMEDIATE takes the
  /// write lock first, so two writers never deadlock upgrading read locks; a busy database is
  /// waited for (busy timeout), then retried until `kBusyDeadlineSeconds`.
  void transaction(const std::function<void()>& body);

  int64_t changes() const;
  const std::filesystem::path& path() const { return path_; }
  sqlite3* handle() { return db_; }

  /// Throws for a failed SQLite result code `rc` of `what`.
  [[noreturn]] void fail(int rc, const std::string& what) const;

  static constexpr double kBusyDeadlineSeconds = 120;

 private:
  /// Runs `attempt` again while it fails with a busy database (after the busy timeout, or at
  /// once where SQLite does not wait), backing off, until `kBusyDeadlineSeconds`.
  void retry_busy(const std::function<void()>& attempt);

  sqlite3* db_ = nullptr;
  std::filesystem::path path_;
};

}  // namespace dtrain::tracking
