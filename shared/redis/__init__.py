"""dlpipe's Redis layer: every Lua script, and the one loader that builds them.

- shared/keys.py: every key name.
- shared/redis/lua/*.lua: every Lua script, one a file, its KEYS and ARGV documented at its top.
  Fragments (Lua functions several scripts share, such as give_bytes_back or job_ended) are
  .lua files too, pulled in by `--! include <name>` lines (shared/redis/loader.py).
- shared/redis/loader.py: the loader: includes, and the values from Python (`${NAME}`:
  enum values of shared/messages.py, limits) put in where a script names them.
- shared/redis/scripts.py: each script's text (`scripts.COMPLETE_STAGE`...), `registered()`,
  which registers a script once per client, and `ScriptCall` (one call: KEYS, ARGV, its reply read).
- One typed function per script, a module per noun: jobs.py (START_JOB, COMPLETE_STAGE,
  CANCEL_JOB, EXPIRE_JOB), job_reads.py (JOB_SNAPSHOT, JOB_PAGE, READ), admission.py (ADMIT,
  IDEMPOTENCY_RELEASE, RECOUNT_BACKLOG, RECOUNT_BYTES), streams.py (READ_BY_PRIORITY, RECLAIM,
  DEAD_LETTER, TRIM_STREAM, STREAM_BACKLOG), webhooks.py (WEBHOOK_*), heartbeats.py (HEARTBEAT).
  Callers name their arguments; no caller builds KEYS or ARGV by position.
"""
