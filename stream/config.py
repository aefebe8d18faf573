"""All configuration in one place: environment variables with a ``FUNNEL_`` prefix.

Every setting has a documented default so that ``make run`` works with no
environment at all; the tests override ports and the run directory so they
never collide with a stack a developer already has running.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

INPUT_TOPICS = {
    "visit": "shop.visits",
    "signup": "shop.signups",
    "cart": "shop.cart",
    "call": "crm.calls",
    "deal_stage": "crm.deal-stages",
    "spend": "ads.spend",
}


def _env(name: str, default: str) -> str:
    return os.environ.get(f"FUNNEL_{name}", default)


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"FUNNEL_{name}={raw!r} is not an integer") from None


def _env_float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"FUNNEL_{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class Settings:
    """Settings read once from the environment (see ``Settings.from_env``)."""

    # Where the local stack keeps pid files, logs and data (FUNNEL_RUN_DIR).
    run_dir: Path = REPO_ROOT / ".run"
    # Interface every component binds to (FUNNEL_HOST). Keep 127.0.0.1 locally.
    host: str = "127.0.0.1"
    # Kafka (FUNNEL_KAFKA_PORT, FUNNEL_KAFKA_CONTROLLER_PORT, FUNNEL_KAFKA_VERSION).
    kafka_port: int = 9092
    kafka_controller_port: int = 9097
    # The local broker's second listener, SASL_PLAINTEXT with PLAIN (user
    # "funnel", password "funnel-local"), to try the security settings against
    # (FUNNEL_KAFKA_SASL_PORT); loopback only, like every local port.
    kafka_sasl_port: int = 9094
    kafka_version: str = "3.9.1"
    # Jars fetched by Maven, shared by every checkout (FUNNEL_KAFKA_LIB).
    kafka_lib: Path = Path.home() / ".cache" / "funnel-stream" / "kafka-3.9.1" / "lib"
    kafka_heap: str = "768m"
    # Partitions of every topic the stack creates (FUNNEL_PARTITIONS) and the
    # replication factor of created topics and tables (FUNNEL_REPLICATION_FACTOR;
    # 1 for the local single broker, 3 on a production cluster).
    partitions: int = 2
    replication_factor: int = 1
    # Bootstrap servers for the worker; defaults to the local broker (FUNNEL_KAFKA_BOOTSTRAP).
    kafka_bootstrap: str = ""
    # An external Kafka's security (FUNNEL_KAFKA_SECURITY_PROTOCOL: PLAINTEXT,
    # SSL, SASL_PLAINTEXT or SASL_SSL; FUNNEL_KAFKA_SASL_MECHANISM: PLAIN,
    # SCRAM-SHA-256 or SCRAM-SHA-512; FUNNEL_KAFKA_SASL_USERNAME,
    # FUNNEL_KAFKA_SASL_PASSWORD; FUNNEL_KAFKA_SSL_CAFILE: the CA bundle that
    # signed the brokers' certificates, empty = the system's). Every Kafka
    # client of the project (worker, producer, demo, admin) uses them.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_cafile: str = ""
    redis_port: int = 6379
    # The Redis the worker uses (FUNNEL_REDIS_URL); defaults to the local one.
    redis_url: str = ""
    # Prefix of every call-tracking key in Redis (FUNNEL_REDIS_PREFIX): one
    # namespace per deployment sharing a Redis.
    redis_prefix: str = "funnel:"
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    # Prometheus scrape and rule evaluation interval (FUNNEL_SCRAPE_INTERVAL).
    scrape_interval: str = "5s"
    # Worker: Faust app id, web port, table store (FUNNEL_APP_ID, FUNNEL_WEB_PORT, FUNNEL_STORE).
    app_id: str = "funnel-stream"
    web_port: int = 6066
    # Interface the worker's web server binds to (FUNNEL_WEB_BIND, default
    # FUNNEL_HOST) and the host name other workers reach it by
    # (FUNNEL_WEB_ADVERTISE, default FUNNEL_HOST): in Kubernetes 0.0.0.0 and
    # the pod's DNS name behind the headless service.
    web_bind: str = ""
    web_advertise: str = ""
    # Where the worker keeps table state on disk (FUNNEL_DATA_DIR, default
    # <run dir>/worker-data); one directory per app id below it.
    data_dir: Path = REPO_ROOT / ".run" / "worker-data"
    store: str = "memory://"
    # Prefix of every input topic name, e.g. "test." (FUNNEL_TOPIC_PREFIX).
    topic_prefix: str = ""
    dead_letter_topic: str = "funnel.dead-letter"
    # Internal topic of valid events re-keyed by entity (FUNNEL_EVENTS_TOPIC).
    events_topic: str = "funnel.events"
    # Duplicates of an event_id within this many seconds of event time count
    # once (FUNNEL_DEDUP_HORIZON); older ids are forgotten to bound state.
    dedup_horizon: float = 86400.0
    # Seconds between purges of de-dup ids past the horizon (FUNNEL_DEDUP_PURGE_EVERY).
    dedup_purge_every: float = 60.0
    # A full garbage collection of the worker slower than this many milliseconds
    # freezes what survived it, so later ones skip the state held (stream/heap.py;
    # FUNNEL_GC_FREEZE_MS, 0 = never).
    gc_freeze_ms: float = 50.0
    # Funnel definitions (FUNNEL_FUNNELS); empty = the defaults in the package.
    funnels: str = ""
    # Call tracking numbers: the dynamic pool, lease time and static numbers
    # per source (FUNNEL_TRACKING); empty = stream/core/tracking.toml in the package.
    tracking: str = ""
    # Bearer token that write endpoints (POST /api/tracking-numbers) require
    # (FUNNEL_API_TOKEN); empty = no token, fine only on 127.0.0.1.
    api_token: str = field(default="", repr=False)
    # Tracking number leases a minute per session (FUNNEL_LEASES_PER_SESSION) and
    # per client address (FUNNEL_LEASES_PER_CLIENT; raise it for offices behind
    # one NAT), each per worker; over it: 429 with Retry-After. 0 = no limit.
    leases_per_session: float = 6.0
    leases_per_client: float = 20.0
    # Behind a reverse proxy: the header that carries the client address
    # (FUNNEL_CLIENT_ADDRESS_HEADER, e.g. X-Forwarded-For; its last address is used).
    client_address_header: str = ""
    # The collector (`funnel collector`, DESIGN.md section 9): its port
    # (FUNNEL_COLLECTOR_PORT) and bind address (FUNNEL_COLLECTOR_BIND, default
    # FUNNEL_HOST); the write keys file (FUNNEL_COLLECTOR_KEYS; empty = no keys,
    # allowed only on a loopback bind); the webhook mapping (FUNNEL_WEBHOOKS;
    # empty = stream/collector/webhooks.toml); seconds to wait for Kafka's
    # acknowledgement before answering 503 (FUNNEL_COLLECTOR_ACK_TIMEOUT);
    # events sent and not yet acknowledged, over which requests get 503
    # (FUNNEL_COLLECTOR_MAX_PENDING); requests in progress, over which 429
    # (FUNNEL_COLLECTOR_MAX_REQUESTS); where tracking numbers are leased
    # (FUNNEL_COLLECTOR_LEASE_URL, default the worker's /api/tracking-numbers);
    # the salt of callers' number hashes (FUNNEL_CALLER_SALT); whether it also
    # serves the sample shop at /shop/ (FUNNEL_COLLECTOR_SHOP=1, as `make run` does).
    collector_port: int = 6070
    collector_bind: str = ""
    collector_keys: str = ""
    webhooks: str = ""
    collector_ack_timeout: float = 10.0
    collector_max_pending: int = 50000
    collector_max_requests: int = 256
    collector_lease_url: str = ""
    caller_salt: str = field(default="", repr=False)
    collector_shop: bool = False
    # Counter bucket size in seconds (FUNNEL_BUCKET) and allowed lateness
    # (FUNNEL_LATENESS): an event is late when older than the stream's watermark
    # (the lowest newest event time over the input sources still being read)
    # minus its funnel's window minus this (DESIGN.md section 4).
    bucket: int = 60
    lateness: float = 600.0
    # Counter buckets older than this many seconds behind the watermark are
    # dropped (FUNNEL_RETENTION, default 35 days).
    retention: float = 35 * 86400.0
    # Seconds between checks of which input partitions have nothing unread
    # (FUNNEL_IDLE_CHECK); those that also got nothing new for FUNNEL_IDLE_TIMEOUT
    # seconds do not hold the watermark back.
    idle_check: float = 2.0
    idle_timeout: float = 10.0
    # An assigned partition whose agent got nothing for this many seconds while
    # records lie past the offset it expects is read again from that offset
    # (FUNNEL_STALL_AFTER; stream/faust_fixes/stalled_tails.py).
    stall_after: float = 5.0
    # Trailing windows of the funnel gauges on /metrics (FUNNEL_METRIC_WINDOWS).
    metric_windows: str = "5m,1h,24h"
    # FunnelDropOffSpike: a step's conversion over the short window (a metric
    # window) below (1 - drop) x its baseline: the same short window one
    # baseline offset ago, or the long window where no history exists yet; only
    # with at least min_volume attempts at the previous step in the short
    # window, and for `for` (FUNNEL_ALERT_SHORT_WINDOW, _LONG_WINDOW,
    # _BASELINE_OFFSET, _DROP, _MIN_VOLUME, _FOR).
    alert_short_window: str = "1h"
    alert_long_window: str = "24h"
    alert_baseline_offset: str = "1d"
    alert_drop: float = 0.5
    alert_min_volume: int = 100
    alert_for: str = "15m"
    # FunnelConsumerLagHigh: unprocessed messages over all partitions
    # (FUNNEL_ALERT_LAG_MESSAGES); FunnelRejectedEventsHigh: share of input
    # rejected over 10 minutes (FUNNEL_ALERT_REJECT_RATIO).
    alert_lag_messages: int = 10000
    alert_reject_ratio: float = 0.05
    # Where the local Alertmanager delivers alerts (FUNNEL_ALERT_WEBHOOK).
    alert_webhook: str = "http://127.0.0.1:5001/alerts"
    # Seconds the worker waits between commits (FUNNEL_COMMIT_INTERVAL). The
    # counting stage reads the events topic read_committed, so an event waits
    # for the normalising stage's commit: this is most of the end-to-end latency.
    # 0.2 s: p99 under 1 s at 5,000 events/s with no loss of throughput
    # (docs/capacity.md); each commit is a Kafka transaction per input partition.
    commit_interval: float = 0.2
    # Consumer-group session timeout in seconds: how long a crashed worker's
    # partitions wait before a rebalance hands them on (FUNNEL_SESSION_TIMEOUT).
    session_timeout: float = 30.0
    # Seconds a starting worker may read its changelogs in bulk before Faust's
    # own (slower) reader goes on (FUNNEL_RECOVERY_BULK_S; 0: Faust's reader only;
    # kept under Faust's 90 s step timeout). Memory store only.
    recovery_bulk_s: float = 60.0
    # Debug aid: log every batch's offset ranges and Faust's gaps and seeks
    # (FUNNEL_TRACE_OFFSETS=1).
    trace_offsets: bool = False
    # Log level of the worker's structured logs (FUNNEL_LOG_LEVEL).
    log_level: str = "info"
    topics: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Settings:
        version = _env("KAFKA_VERSION", cls.kafka_version)
        prefix = _env("TOPIC_PREFIX", "")
        kafka_port = _env_int("KAFKA_PORT", cls.kafka_port)
        default_lib = Path.home() / ".cache" / "funnel-stream" / f"kafka-{version}" / "lib"
        topics = {t: _env(f"TOPIC_{t.upper()}", prefix + name) for t, name in INPUT_TOPICS.items()}
        host = _env("HOST", cls.host)
        redis_port = _env_int("REDIS_PORT", cls.redis_port)
        run_dir = Path(_env("RUN_DIR", str(cls.run_dir))).resolve()
        return cls(
            run_dir=run_dir,
            host=host,
            kafka_port=kafka_port,
            kafka_controller_port=_env_int("KAFKA_CONTROLLER_PORT", cls.kafka_controller_port),
            kafka_sasl_port=_env_int("KAFKA_SASL_PORT", cls.kafka_sasl_port),
            kafka_version=version,
            kafka_lib=Path(_env("KAFKA_LIB", str(default_lib))),
            kafka_heap=_env("KAFKA_HEAP", cls.kafka_heap),
            partitions=_env_int("PARTITIONS", cls.partitions),
            replication_factor=_env_int("REPLICATION_FACTOR", cls.replication_factor),
            kafka_bootstrap=_env("KAFKA_BOOTSTRAP", f"{host}:{kafka_port}"),
            kafka_security_protocol=_env(
                "KAFKA_SECURITY_PROTOCOL", cls.kafka_security_protocol
            ).upper(),
            kafka_sasl_mechanism=_env("KAFKA_SASL_MECHANISM", cls.kafka_sasl_mechanism).upper(),
            kafka_sasl_username=_env("KAFKA_SASL_USERNAME", ""),
            kafka_sasl_password=_env("KAFKA_SASL_PASSWORD", ""),
            kafka_ssl_cafile=_env("KAFKA_SSL_CAFILE", ""),
            redis_port=redis_port,
            redis_url=_env("REDIS_URL", f"redis://{host}:{redis_port}/0"),
            prometheus_port=_env_int("PROMETHEUS_PORT", cls.prometheus_port),
            alertmanager_port=_env_int("ALERTMANAGER_PORT", cls.alertmanager_port),
            scrape_interval=_env("SCRAPE_INTERVAL", cls.scrape_interval),
            app_id=_env("APP_ID", cls.app_id),
            web_port=_env_int("WEB_PORT", cls.web_port),
            web_bind=_env("WEB_BIND", host),
            web_advertise=_env("WEB_ADVERTISE", host),
            data_dir=Path(_env("DATA_DIR", str(run_dir / "worker-data"))).resolve(),
            store=_env("STORE", cls.store),
            topic_prefix=prefix,
            dead_letter_topic=_env("DEAD_LETTER_TOPIC", prefix + cls.dead_letter_topic),
            events_topic=_env("EVENTS_TOPIC", prefix + cls.events_topic),
            dedup_horizon=_env_float("DEDUP_HORIZON", cls.dedup_horizon),
            dedup_purge_every=_env_float("DEDUP_PURGE_EVERY", cls.dedup_purge_every),
            gc_freeze_ms=_env_float("GC_FREEZE_MS", cls.gc_freeze_ms),
            funnels=_env("FUNNELS", cls.funnels),
            tracking=_env("TRACKING", cls.tracking),
            redis_prefix=_env("REDIS_PREFIX", cls.redis_prefix),
            api_token=_env("API_TOKEN", cls.api_token),
            leases_per_session=_env_float("LEASES_PER_SESSION", cls.leases_per_session),
            leases_per_client=_env_float("LEASES_PER_CLIENT", cls.leases_per_client),
            client_address_header=_env("CLIENT_ADDRESS_HEADER", cls.client_address_header),
            **_collector_env(host),
            bucket=_env_int("BUCKET", cls.bucket),
            lateness=_env_float("LATENESS", cls.lateness),
            retention=_env_float("RETENTION", cls.retention),
            idle_check=_env_float("IDLE_CHECK", cls.idle_check),
            idle_timeout=_env_float("IDLE_TIMEOUT", cls.idle_timeout),
            stall_after=_env_float("STALL_AFTER", cls.stall_after),
            metric_windows=_env("METRIC_WINDOWS", cls.metric_windows),
            alert_short_window=_env("ALERT_SHORT_WINDOW", cls.alert_short_window),
            alert_long_window=_env("ALERT_LONG_WINDOW", cls.alert_long_window),
            alert_baseline_offset=_env("ALERT_BASELINE_OFFSET", cls.alert_baseline_offset),
            alert_drop=_env_float("ALERT_DROP", cls.alert_drop),
            alert_min_volume=_env_int("ALERT_MIN_VOLUME", cls.alert_min_volume),
            alert_for=_env("ALERT_FOR", cls.alert_for),
            alert_lag_messages=_env_int("ALERT_LAG_MESSAGES", cls.alert_lag_messages),
            alert_reject_ratio=_env_float("ALERT_REJECT_RATIO", cls.alert_reject_ratio),
            alert_webhook=_env("ALERT_WEBHOOK", cls.alert_webhook),
            commit_interval=_env_float("COMMIT_INTERVAL", cls.commit_interval),
            session_timeout=_env_float("SESSION_TIMEOUT", cls.session_timeout),
            recovery_bulk_s=_env_float("RECOVERY_BULK_S", cls.recovery_bulk_s),
            log_level=_env("LOG_LEVEL", cls.log_level),
            trace_offsets=_env("TRACE_OFFSETS", "") not in ("", "0", "false"),
            topics=topics,
        )

    @property
    def metric_window_seconds(self) -> dict[str, int]:
        """FUNNEL_METRIC_WINDOWS as {label: seconds}, e.g. {"5m": 300, ...}."""
        from stream.core.funnels import parse_duration

        names = [w.strip() for w in self.metric_windows.split(",") if w.strip()]
        try:
            return {name: parse_duration(name) for name in names}
        except ValueError as exc:
            raise ValueError(f"FUNNEL_METRIC_WINDOWS: {exc}") from None

    @property
    def alert_long_window_seconds(self) -> int:
        """FUNNEL_ALERT_LONG_WINDOW in seconds: also the live page's drop baseline."""
        from stream.core.funnels import parse_duration

        try:
            return parse_duration(self.alert_long_window)
        except ValueError as exc:
            raise ValueError(f"FUNNEL_ALERT_LONG_WINDOW: {exc}") from None

    def describe(self) -> dict[str, str]:
        """Flat view for `funnel config`, so users can see what is in effect."""
        out = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        if self.kafka_sasl_password:
            out["kafka_sasl_password"] = "***"
        if self.api_token:
            out["api_token"] = "***"
        if self.caller_salt:
            out["caller_salt"] = "***"
        return out


def _collector_env(host: str) -> dict:
    """The collector's settings (FUNNEL_COLLECTOR_*, FUNNEL_WEBHOOKS, FUNNEL_CALLER_SALT)."""
    cls = Settings
    return dict(
        collector_port=_env_int("COLLECTOR_PORT", cls.collector_port),
        collector_bind=_env("COLLECTOR_BIND", host),
        collector_keys=_env("COLLECTOR_KEYS", cls.collector_keys),
        webhooks=_env("WEBHOOKS", cls.webhooks),
        collector_ack_timeout=_env_float("COLLECTOR_ACK_TIMEOUT", cls.collector_ack_timeout),
        collector_max_pending=_env_int("COLLECTOR_MAX_PENDING", cls.collector_max_pending),
        collector_max_requests=_env_int("COLLECTOR_MAX_REQUESTS", cls.collector_max_requests),
        collector_lease_url=_env(
            "COLLECTOR_LEASE_URL",
            f"http://{_env('WEB_ADVERTISE', host)}:"
            f"{_env_int('WEB_PORT', cls.web_port)}/api/tracking-numbers",
        ),
        caller_salt=_env("CALLER_SALT", cls.caller_salt),
        collector_shop=_env("COLLECTOR_SHOP", "") not in ("", "0", "false"),
    )
