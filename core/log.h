/*
 * Structured logs: one JSON object per line on stderr, as Piko writes them:
 *   {"level":"info","ts":"2026-11-29T18:00:00.123Z","subsystem":"proxy","msg":"...", fields...}
 * ts uses Go's layout 2006-01-02T15:04:05.999Z07:00 (UTC, milliseconds with
 * trailing zeros trimmed). Field names are kebab-case ("endpoint-id").
 *
 * Fields are given as a NULL-terminated list of name, value string pairs:
 *   pk_log(PK_LOG_INFO, "upstream", "upstream connected",
 *          "endpoint-id", ep, "client-ip", ip, NULL);
 * Values are JSON-escaped. Lines are written with one write(2) so concurrent
 * processes sharing stderr do not interleave within a line.
 */
#ifndef PK_LOG_H
#define PK_LOG_H

#include <stdint.h>
#include <stdio.h>

enum pk_log_level {
	PK_LOG_DEBUG = 0,
	PK_LOG_INFO = 1,
	PK_LOG_WARN = 2,
	PK_LOG_ERROR = 3,
};

/* Parse "debug", "info", "warn", "error"; returns -1 for anything else. */
int pk_log_parse_level(const char *s);

/* Global minimum level (default info). */
void pk_log_set_level(enum pk_log_level level);

/* Subsystems that log at every level regardless of the minimum level
 * (--log.subsystems). names may be NULL. Copies the strings. */
void pk_log_set_subsystems(char *const *names, size_t n);

/* 1 if a record of this level and subsystem would be written. */
int pk_log_enabled(enum pk_log_level level, const char *subsystem);

/* Write one record; see the file comment for the field list. */
void pk_log(enum pk_log_level level, const char *subsystem, const char *msg, ...);

/* Write one record whose one field, key, has a JSON value (json: already
 * serialised, valid JSON; NULL or "" writes null). Unlike pk_log() the line
 * has no 8 KiB cap: the access log's request object carries whole header
 * sets. Still one write(2). */
void pk_log_json(enum pk_log_level level, const char *subsystem, const char *msg, const char *key,
                 const char *json);

/* Free what pk_log_set_subsystems copied. */
void pk_log_reset(void);

/* Format the current UTC time in Go's RFC 3339 millisecond layout into buf
 * (at least 32 bytes). */
void pk_log_timestamp(char *buf, size_t len);

/* Same, for a given time in milliseconds since the Unix epoch (tests). */
void pk_log_timestamp_at(int64_t unix_ms, char *buf, size_t len);

/* Write records to fd instead of stderr (tests capture them); -1 restores
 * stderr. */
void pk_log_set_fd(int fd);

#endif
