#include "tools/tracking/sqlite_db.h"

#include <sqlite3.h>

#include <chrono>
#include <thread>

#include "core/errors.h"

namespace dtrain::tracking {

namespace {

/// SQLITE_BUSY / SQLITE_LOCKED after the busy timeout: the transaction is retried.
class BusyError : public IoError {
 public:
  using IoError::IoError;
};

constexpr int kBusyTimeoutMs = 30000;

}  // namespace

Db::Db(const std::filesystem::path& path, bool create) : path_(path) {
  const int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    const std::string msg = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    throw ConfigError(path.string() + ": cannot open the workspace database: " + msg);
  }
  sqlite3_extended_result_codes(db_, 0);
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  try {
    // The first statement that reads the file is where a non-database file shows itself.
    // Switching to WAL needs the database to itself for a moment, and SQLite reports a busy
    // database here without waiting (several processes opening a new workspace at once).
    retry_busy([&] { exec("PRAGMA journal_mode=WAL"); });
    exec("PRAGMA synchronous=NORMAL");
    exec("PRAGMA foreign_keys=ON");
  } catch (...) {
    sqlite3_close_v2(db_);
    throw;
  }
}

Db::~Db() { sqlite3_close_v2(db_); }

void Db::fail(int rc, const std::string& what) const {
  const std::string msg = path_.string() + ": " + what + ": " + sqlite3_errmsg(db_);
  if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT) {
    throw ConfigError(path_.string() + ": not a dtrain workspace database (SQLite says: " +
                      sqlite3_errmsg(db_) + ")");
  }
  if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) throw BusyError(msg);
  throw IoError(msg);
}

void Db::exec(std::string_view sql) {
  Statement st(*this, sql);
  st.run();
}

std::optional<int64_t> Db::query_integer(std::string_view sql) {
  Statement st(*this, sql);
  if (!st.step() || st.is_null(0)) return std::nullopt;
  return st.integer(0);
}

void Db::retry_busy(const std::function<void()>& attempt) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(kBusyDeadlineSeconds);
  for (int n = 0;; ++n) {
    try {
      attempt();
      return;
    } catch (const BusyError&) {
      if (std::chrono::steady_clock::now() > deadline) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(10 * (1 + n % 10)));
    }
  }
}

void Db::transaction(const std::function<void()>& body) {
  retry_busy([&] { exec("BEGIN IMMEDIATE"); });
  try {
    body();
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

int64_t Db::changes() const { return sqlite3_changes(db_); }

Statement::Statement(Db& db, std::string_view sql) : db_(db), sql_(sql) {
  const int rc =
      sqlite3_prepare_v2(db.handle(), sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
  if (rc != SQLITE_OK) db_.fail(rc, "preparing '" + sql_ + "'");
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::bind(int index, std::string_view value) {
  const int rc = sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()),
                                   SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) db_.fail(rc, "binding parameter " + std::to_string(index));
  return *this;
}

Statement& Statement::bind(int index, int64_t value) {
  const int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK) db_.fail(rc, "binding parameter " + std::to_string(index));
  return *this;
}

Statement& Statement::bind(int index, double value) {
  const int rc = sqlite3_bind_double(stmt_, index, value);
  if (rc != SQLITE_OK) db_.fail(rc, "binding parameter " + std::to_string(index));
  return *this;
}

Statement& Statement::bind_null(int index) {
  const int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK) db_.fail(rc, "binding parameter " + std::to_string(index));
  return *this;
}

bool Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  sqlite3_reset(stmt_);
  db_.fail(rc, "running '" + sql_ + "'");
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

bool Statement::is_null(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}
int64_t Statement::integer(int column) const { return sqlite3_column_int64(stmt_, column); }
double Statement::real(int column) const { return sqlite3_column_double(stmt_, column); }
std::string Statement::text(int column) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
  return p != nullptr ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, column)))
                      : std::string();
}

}  // namespace dtrain::tracking
