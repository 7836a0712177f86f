"""Realistic Spring Boot logs for the sandbox's log groups (/erp/<env>/<service>-service).

INFO traffic, WARNs, ERRORs with stack traces, Kafka consumer lag on the approval
services, WebSocket disconnects on notification; a burst of errors a while ago
so `/erp logs ... stats` has a shape.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from bot.aws.clients import AwsClients
from sandbox.erp_services import log_group_of

STACK = ("\n\tat org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1014)"
         "\n\tat org.springframework.web.servlet.FrameworkServlet.doPost(FrameworkServlet.java:914)"
         "\n\tat jakarta.servlet.http.HttpServlet.service(HttpServlet.java:590)"
         "\n\tat org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:166)"
         "\n\t... 48 common frames omitted")

COMMON = [
    ("INFO", "o.s.b.a.h.HealthEndpoint", "Health check UP (db: UP, diskSpace: UP, ping: UP)"),
    ("INFO", "c.e.erp.web.RequestLogger", "POST /api/v1/{path} 200 in {ms}ms"),
    ("INFO", "c.e.erp.web.RequestLogger", "GET /api/v1/{path}/1042 200 in {ms}ms"),
    ("WARN", "com.zaxxer.hikari.pool.HikariPool", "HikariPool-1 - Thread starvation or clock leap detected (housekeeper delta=1m2s)."),
    ("ERROR", "o.a.c.c.C.[.[.[/].[dispatcherServlet]", "Servlet.service() for servlet [dispatcherServlet] threw exception"
     " [Request processing failed: org.springframework.dao.DataAccessResourceFailureException: Unable to acquire JDBC"
     " Connection; timeout after 30000ms] with root cause" + STACK),
]
BY_SERVICE = {
    "employee": [("ERROR", "c.e.erp.employee.EmployeeService", "Failed to update employee 1042: optimistic lock"
                  " failure (ObjectOptimisticLockingFailureException)" + STACK)],
    "approval-request": [("WARN", "o.a.k.c.c.internals.ConsumerCoordinator", "[Consumer clientId=approval-request-0,"
                          " groupId=approval] consumer lag 1834 on approval-requests-2, committing offsets slowly"),
                         ("ERROR", "o.s.k.l.KafkaMessageListenerContainer", "Error handler threw an exception:"
                          " org.apache.kafka.common.errors.TimeoutException: Timeout of 60000ms expired before"
                          " the position for partition approval-requests-1 could be determined" + STACK)],
    "approval-processing": [("WARN", "o.a.k.c.c.internals.ConsumerCoordinator", "[Consumer clientId=approval-"
                             "processing-0, groupId=processing] consumer lag 4211 on approvals-0"),
                            ("ERROR", "c.e.erp.approval.ApprovalProcessor", "Processing approval 88123 failed:"
                             " MongoTimeoutException: Timed out after 30000 ms while waiting for a server" + STACK)],
    "notification": [("WARN", "c.e.erp.notify.WebSocketSessionRegistry", "WebSocket session {sid} closed abnormally"
                      " (1006): client disconnected without close frame"),
                     ("INFO", "c.e.erp.notify.WebSocketSessionRegistry", "WebSocket session {sid} opened for user"
                      " u-{ms}; 412 sessions active"),
                     ("ERROR", "c.e.erp.notify.RedisPublisher", "Redis publish to channel notifications failed:"
                      " RedisCommandTimeoutException: Command timed out after 1 minute(s)" + STACK)],
}
PATHS = ("employees", "approvals", "approval-requests", "notifications", "departments")


def _lines(service: str, now: datetime, rng: random.Random) -> list[tuple[int, str]]:
    templates = COMMON + BY_SERVICE.get(service, [])
    events = []
    t = now - timedelta(hours=3)
    while t < now:
        t += timedelta(seconds=rng.randint(5, 40))
        burst = now - timedelta(minutes=95) < t < now - timedelta(minutes=80)  # an incident an hour and a half ago
        weights = [8 if lvl == "INFO" else 2 if lvl == "WARN" else (12 if burst else 1) for lvl, _, _ in templates]
        level, logger, message = rng.choices(templates, weights)[0]
        text = message.format(path=rng.choice(PATHS), ms=rng.randint(3, 900), sid=f"{rng.getrandbits(32):08x}")
        stamp = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
        thread = "http-nio-8080-exec-" + str(rng.randint(1, 10))
        events.append((int(t.timestamp() * 1000), f"{stamp} {level:>5} 1 --- [{thread}] {logger:<40} : {text}"))
    return events


def seed_service_logs(aws: AwsClients, services: list[str], environments: list[str], seed: int = 7) -> int:
    logs = aws.client("logs")
    now = datetime.now(UTC)
    total = 0
    for env in environments:
        for service in services:
            group = log_group_of(service, env)
            logs.create_log_group(logGroupName=group)
            stream = f"{service}-service-7d9f8c-{env}"
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
            events = _lines(service, now, random.Random(f"{seed}{env}{service}"))
            for i in range(0, len(events), 5000):
                logs.put_log_events(logGroupName=group, logStreamName=stream,
                                    logEvents=[{"timestamp": ts, "message": m} for ts, m in events[i:i + 5000]])
            total += len(events)
    return total
