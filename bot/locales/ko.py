"""한국어 메시지 (기본). 자리표시자에 들어가는 값은 이미 HTML 이스케이프되어 있다."""

from services.locales import SHARED
from services.locales.ko import TEXTS

MESSAGES: dict[str, str] = {
    # The words the documents share (severities, timeline entries, our own actors):
    # services/locales.
    **{k: v for k, v in TEXTS.items() if k.startswith(SHARED)},
    "start": (
        "<b>SunFlow Ops</b> 봇입니다. P0–P3 장애 알림을 보내고 명령을 받습니다.\n"
        "내 역할: <b>{role}</b>. 명령 목록은 /help 를 보내세요."
    ),
    "help.title": "<b>명령어</b>",
    "help.role": "내 역할: <b>{role}</b>",
    "cmd.start": "봇 소개",
    "cmd.help": "명령어 목록",
    "cmd.health": "전체 구성 요소 헬스체크",
    "cmd.token": "인스타그램 토큰 상태",
    "cmd.retry": "실패한 작업 재시도",
    "cmd.sse_reset": "SSE 연결 초기화 (관리자)",
    "cmd.incidents": "진행 중인 장애 목록",
    "cmd.ack": "장애 확인(ack)",
    "cmd.resolve": "장애 해결 처리",
    "cmd.snooze": "일정 시간 에스컬레이션 보류",
    "cmd.status": "심각도별 진행 중인 장애 수",
    "cmd.notify_test": "모든 채널로 테스트 메시지 전송 (관리자)",
    "usage.ack": (
        "사용법: /ack ID [기간] — 예: /ack 42 또는 /ack 42 30m; 또는 알림에 답장으로 /ack [기간]"
    ),
    "usage.resolve": (
        "사용법: /resolve ID [메모] — 예: /resolve 42 토큰 갱신 완료; "
        "또는 알림에 답장으로 /resolve [메모]"
    ),
    "usage.snooze": (
        "사용법: /snooze ID 기간 — 예: /snooze 42 1h; 또는 알림에 답장으로 /snooze 기간"
    ),
    "unknown": "알 수 없는 명령입니다. /help 로 명령 목록을 확인하세요.",
    "refused": (
        "죄송합니다. 이 명령은 {required} 역할이 필요하며 현재 역할은 {role}입니다 "
        "(사용자 ID: {user_id}). 필요하면 관리자에게 요청하세요."
    ),
    "role.outsider": "팀 외부 사용자",
    "role.viewer": "조회자(viewer)",
    "role.responder": "대응자(responder)",
    "role.admin": "관리자(admin)",
    "error": "⚠️ {message}",
    "error.internal": "⚠️ 서버 쪽에서 실패했습니다(로그에 기록됨). 다시 시도해 주세요.",
    "status.healthy": "정상",
    "status.degraded": "저하",
    "status.down": "중단",
    "incidents.none": "진행 중인 장애가 없습니다. 🌤",
    "incidents.title": "<b>진행 중인 장애 ({count}건)</b>",
    "incidents.line": "{badge} <b>#{id}</b> {title} · {state} · ×{count} · {age}",
    "status.title": "<b>현황</b>",
    "status.counts": "진행 중인 장애: {total}건 — P0 {P0} · P1 {P1} · P2 {P2} · P3 {P3}",
    "state.triggered": "🚨 발생",
    "state.acknowledged": "👀 확인됨",
    "state.resolved": "✅ 해결됨",
    # 대체 채널(이메일, 웹훅): 텔레그램에 닿지 않을 때 읽는 일반 텍스트.
    "fallback.alert.subject": "[{severity}] #{id} {title}",
    "fallback.alert.body": (
        "{severity} ({meaning}) 장애 #{id}\n"
        "제목: {title}\n"
        "출처: {source}\n"
        "상태: {state} · {count}회 수신\n"
        "처음 발생: {first_seen}\n"
        "응답 기한: {deadline}\n"
        "라벨: {labels}\n"
        "\n"
        "{description}\n"
        "\n"
        "SunFlow Ops가 대체 채널로 보냈습니다: {reason}."
    ),
    "fallback.reason.bot_off": "텔레그램 봇이 꺼져 있습니다",
    "fallback.reason.telegram_failing": "{since}부터 텔레그램 전송이 실패하고 있습니다",
    "fallback.reason.not_delivered": "{after} 안에 텔레그램으로 전달되지 않았습니다",
    "fallback.down.subject": "[SunFlow Ops] 텔레그램 장애: 알림이 채팅방에 닿지 않습니다",
    "fallback.down.body": (
        "{since}부터 텔레그램이 메시지를 받지 않습니다({minutes}분째).\n"
        "아웃박스에 메시지 {pending}건이 대기 중입니다{oldest}. 텔레그램이 다시 전달할 때까지 "
        "P0/P1 알림도 이곳으로 옵니다.\n"
        "마지막 오류: {error}\n"
        "\n"
        "플레이북 시나리오 6: sunflow-ops health(telegram 항목) 확인, TELEGRAM_BOT_TOKEN "
        "확인, 서비스 재시작, sunflow-ops notify test."
    ),
    "fallback.down.oldest": "(가장 오래된 것: {oldest})",
    "fallback.down.no_error": "알 수 없음",
    "fallback.test.subject": "SunFlow Ops 테스트 메시지",
    "fallback.database.subject": "[P0] SunFlow Ops 데이터베이스 쓰기 거부 ({instance})",
    "fallback.database.body": (
        "{instance}의 데이터베이스 헬스 체크 실패: {detail}\n"
        "장애 기록도 남기지 못했습니다: {reason}\n"
        "디스크 여유 공간, 파일 권한 또는 역할 권한을 확인하세요.\n"
        "\n"
        "SunFlow Ops가 대체 채널로 보냈습니다: 데이터베이스가 다운되었습니다."
    ),
    "fallback.up.subject": "[SunFlow Ops] 텔레그램 전송 복구",
    "fallback.up.body": (
        "텔레그램이 다시 메시지를 받습니다({since}부터 약 {now}까지 실패). 아웃박스에 쌓인 "
        "메시지를 전달하고 있습니다."
    ),
    "card.state": "상태: {state}",
    "card.by": "{state} — {actor}, {at}",
    "card.ack_until": " ({until}까지)",
    "card.meta": "출처: {source} · 발생 횟수: {count} · 경과: {age}",
    "card.deadline": "응답 기한: {deadline} ({left})",
    "card.deadline.overdue": "{delta} 초과",
    "card.deadline.left": "{delta} 남음",
    "card.labels": "라벨: {labels}",
    "card.snoozed": "💤 {until}까지 보류",
    "card.last": "최근: {what}",
    "button.ack": "👀 확인",
    "button.resolve": "✅ 해결",
    "button.details": "🔎 상세",
    "change.triggered": "{actor} 발생",
    "change.deduplicated": "재발생 (×{count})",
    "change.acknowledged": "{actor} 확인",
    "change.resolved": "{actor} 해결",
    "change.reopened": "{actor} 재개",
    "change.annotated": "{actor} 메모: {text}",
    "change.snoozed": "💤 {actor} — {until}까지 보류",
    "change.unacknowledged": "⏰ {who}의 확인 기간이 끝났습니다. 에스컬레이션을 재개합니다",
    "change.escalated": "📣 에스컬레이션 ({step} → {target}){late}: {message}",
    "change.escalated.late": " 지연",
    "change.deadline_missed": (
        "⏰ {incident}{severity} — {waited} 동안 아무도 확인하지 않아 응답 기한({deadline})이 "
        "지났습니다. {next}"
    ),
    "change.deadline_missed.next": "다음 단계: {at}에 {step} → {target}{who}.",
    "change.deadline_missed.last": "예정된 다음 에스컬레이션 단계가 없습니다.",
    "change.other": "{kind} — {actor}",
    "direct.escalated": "📣 {badge} <b>#{id}</b> {title} 건으로 호출되었습니다\n{message}",
    "done.ack": "👀 #{id} 확인 — {actor}",
    "done.ack_until": "👀 #{id} 확인 — {actor}, {until}까지",
    "done.resolve": "✅ #{id} 해결 — {actor}",
    "done.snooze": "💤 #{id} {until}까지 보류",
    "done.reopen": "🚨 #{id} 재개 — {actor}; 에스컬레이션을 다시 시작합니다",
    "usage.reopen": "사용법: /reopen ID [메모] — 예: /reopen 42 다시 발생",
    "cmd.reopen": "해결된 장애 재개 (에스컬레이션 재시작)",
    "button.open_in_group": "💬 그룹에서 열기",
    "health.title": "헬스체크: {status}",
    "health.mark.healthy": "정상",
    "health.mark.degraded": "경고",
    "health.mark.down": "중단",
    "error.ack_resolved": "⚠️ #{id} 은(는) 이미 해결되었습니다. 먼저 재개하세요: /reopen {id}",
    "error.already_acknowledged": "⚠️ #{id} 은(는) 이미 확인되었습니다 ({acknowledged_by})",
    "error.already_resolved": "⚠️ #{id} 은(는) 이미 해결되었습니다 ({resolved_by})",
    "error.not_resolved": "⚠️ #{id} 은(는) 해결된 상태가 아니어서 재개할 것이 없습니다",
    "error.key_open": "⚠️ #{id} 을(를) 재개할 수 없습니다: 같은 중복 키의 장애가 진행 중입니다",
    "error.snooze_resolved": "⚠️ #{id} 은(는) 해결되어 보류할 것이 없습니다",
    "error.snooze_range": "⚠️ 보류 기간은 1분에서 7일 사이입니다. 예: 30m, 2h",
    "error.ack_duration": "⚠️ 확인 기간은 0보다 커야 합니다. 예: 30m",
    "error.no_incident": "⚠️ #{id} 장애가 없습니다",
    "token.line.unset": "인스타그램 토큰: INSTAGRAM_ACCESS_TOKEN 이 설정되지 않았습니다",
    "token.line.state": "인스타그램 토큰: {state}",
    "token.line.restart": (
        "재시작 필요: .env 의 INSTAGRAM_ACCESS_TOKEN 이 실행 중인 서비스의 토큰과 다릅니다. "
        "sunflow-ops serve 를 재시작하세요 (systemctl restart 'sunflow-ops@*')"
    ),
    "token.line.expires": "만료 {at} ({days}일 남음)",
    "token.line.no_expiry": "등록된 만료일 없음: 갱신 후 `token set-expiry 60` 을 실행하세요",
    "token.line.live": "실시간 확인: {verdict}",
    "token.line.unauthorized": (
        "Graph API 가 401 을 응답했습니다 (호출이 성공할 때까지 장애 #{id} 진행 중)"
    ),
    "token.live.valid": "유효",
    "token.live.invalid": "무효",
    "token.state.ok": "정상",
    "token.state.warning": "주의",
    "token.state.critical": "위험",
    "token.state.expired": "만료",
    "token.state.unknown": "알 수 없음",
    "detail.title": "{badge} <b>#{id} {title}</b> · {state}",
    "detail.meta": "출처: {source} · 중복 키: <code>{dedup}</code>",
    "detail.timeline": "<b>타임라인</b>",
    "detail.entry": "{at} · {kind} · {actor}",
    "notify.title": "<b>테스트 메시지 전송 결과</b>",
    "notify.line": "{badge} {channel}: {detail}",
    "trimmed": "\n… (생략됨; 전체 내용은 첨부 파일 참조)",
    "document.caption": "장애 #{id} 전체 내용",
    # -- 파이프라인 운영 ----------------------------------------------------------
    "cmd.traces": "최근 파이프라인 트레이스, 또는 하나: /traces ID",
    "cmd.stats": "통계 수집기 상태; /stats restart",
    "cmd.backup": "설정 백업: 목록, 생성, 복원 (관리자)",
    "usage.token": (
        "사용법: /token [status|guide|set_expiry [일수]] — 예: /token, /token guide, "
        "/token set_expiry 60"
    ),
    "usage.retry": "사용법: /retry [작업ID] — 예: /retry (실패한 작업 목록), /retry 7",
    "usage.traces": "사용법: /traces [트레이스ID] — 예: /traces SF-20260130-090000-ab12",
    "usage.backup": (
        "사용법: /backup [list|create [메모]|restore 백업ID] — 예: /backup create 토큰 교체 전"
    ),
    "usage.stats": "사용법: /stats [status|restart]",
    "token.title": "<b>🔑 인스타그램 토큰</b>",
    "token.weekly": "<b>🗓 주간 인스타그램 토큰 상태</b>",
    "token.hint": "갱신 절차: /token guide",
    "token.set": "✅ 토큰 만료일 등록 — {actor}",
    "retry.none": "실패한 파이프라인 작업이 없습니다. 🌤",
    "retry.title": "<b>파이프라인 작업 ({count}건)</b>",
    "retry.hint": "재시도 버튼을 누르거나 /retry 작업ID 를 보내세요.",
    "retry.done": "🔁 작업 #{id} 재시도 — {actor}: <b>{state}</b>",
    "button.retry": "🔁 재시도 #{id}",
    "button.logs": "📦 로그",
    "traces.none": "아직 파이프라인 트레이스가 없습니다.",
    "traces.title": "<b>최근 트레이스 ({count}건)</b>",
    "traces.hint": "상세: /traces 트레이스ID",
    "trace.title": "<b>트레이스 {id}</b> · {kind} {topic} · {status} · {took}",
    "trace.running": "실행 중",
    "trace.step": "{badge} {name} · {status} · {ms} ms{error}",
    "trace.error": "오류: {error}",
    "backup.none": "백업이 없습니다. 생성: /backup create",
    "backup.title": "<b>백업 ({count}건)</b>",
    "backup.created": "💾 백업 <code>{id}</code> 생성 ({files})",
    "backup.restored": "♻️ {text}",
    "stats.status": "{badge} <b>통계 수집기</b> — {status}: {detail}",
    "stats.restarted": "🔄 통계 수집기를 재시작하고 지금 수집했습니다; 다음 실행 {next}",
    "stats.restart_failed": "⚠️ 통계 수집기를 다시 예약했지만 (다음 실행 {next}) 지금 수집은 "
    "실패했습니다: {detail}",
    "stats.not_configured": (
        "서버에 <code>INSTAGRAM_ACCESS_TOKEN</code> 또는 <code>INSTAGRAM_USER_ID</code> 가 "
        "설정되지 않았습니다"
    ),
    "stats.not_scheduled": "예약 없음",
    "logs.caption": "📦 장애 #{id} 로그: 트레이스 {traces}개, 오류 로그 {lines}줄",
    "logs.sent": "#{id} 로그 전송",
    # -- 에스컬레이션, SSE 관리, 체크리스트, 사후 분석, 보고서 (이슈 4, 5, 7) --
    "cmd.oncall": "현재 당번 확인; /oncall set USER_ID 8h (관리자)",
    "cmd.postmortem": "장애 사후 분석; 항목 기록 (대응자)",
    "cmd.report": "주간 장애 보고서와 차트",
    "usage.oncall": "사용법: /oncall 또는 /oncall set USER_ID 기간 [이름] — 예: /oncall set 42 8h",
    "usage.postmortem": (
        "사용법: /postmortem ID 또는 /postmortem ID summary|impact|cause|prevention 내용"
    ),
    "oncall.title": "<b>당번</b>",
    "oncall.person": "📟 {name} (id <code>{user_id}</code>)",
    "oncall.nobody": "📟 순번 당번 없음 (정책 파일에 순번이 없음)",
    "oncall.override": "{until}까지 대리 지정",
    "oncall.handover": "다음 교대: {at}",
    "oncall.pd": "PD 단계에서 함께 호출: {ids}",
    "oncall.set": "📟 {name} 님이 {until}까지 당번입니다 (지정: {actor})",
    "card.next": "⏭ 다음 단계: {step} → {target}, {at} ({when})",
    "card.next.in": "{delta} 후",
    "card.next.due": "지금",
    "card.retry.next": "🔁 작업 #{id} ({work}) 재시도 {n}/{total}: {at} ({when}) · {left}회 남음",
    "card.retry.running": "🔁 작업 #{id} ({work}): 재시도 {n}/{total} 실행 중",
    "card.retry.exhausted": "⛔ 작업 #{id} ({work}): 자동 재시도 완료, {done}/{total} 실패 — "
    "/retry {id}",
    "card.retry.refused": "⛔ 작업 #{id} ({work}): 자동 재시도 안 함 — 원인을 고친 뒤 /retry {id}",
    "card.retry.succeeded": "✅ 작업 #{id} ({work}) 성공: {at}",
    "card.runbook": "📖 런북: {where}",
    "card.commands": "🛠 {commands}",
    "button.runbook": "📖 런북",
    "card.checklist_open": "☐ 체크리스트 항목 {count}개가 아직 완료되지 않았습니다",
    "button.checklist": "☑ 체크리스트",
    "button.snooze_for": "💤 {duration}",
    "checklist.title": "☑ <b>#{id}</b> — 체크리스트 (항목을 눌러 체크)",
    "checklist.list": "<b>{name}</b>: {done}/{total}",
    "sse.choose": "<b>SSE 초기화</b> — 열린 스트림 {connections}개. 런북 조치를 고르세요:",
    "sse.confirm": "열린 스트림 {connections}개에 <b>{action}</b>. 실행할까요?",
    "sse.cancelled": "SSE 초기화를 취소했습니다.",
    "sse.done": (
        "✅ <b>{action}</b> 완료 ({actor}): 이전 {before}개, 이후 {after}개 스트림 "
        "({closed}개 종료)"
    ),
    "sse.instances": "인스턴스 {reached}개 중 {answered}개 응답",
    "sse.button.restart": "🔁 허브 재시작",
    "sse.button.reset": "🔌 연결 초기화",
    "sse.button.broadcast": "📣 재연결 방송",
    "sse.button.confirm": "✅ 확인",
    "sse.button.cancel": "✖ 취소",
    "sse.action.restart": "허브 재시작",
    "sse.action.reset": "연결 초기화",
    "sse.action.broadcast": "재연결 방송",
    "postmortem.missing": (
        "#{id} 사후 분석. 아직 비어 있는 항목: {fields} (/postmortem {id} 항목 내용)"
    ),
    "postmortem.complete": "#{id} 사후 분석: 모든 항목이 채워졌습니다.",
    "postmortem.set": "📝 #{id}: {field} 기록 — {actor}",
    "report.caption": "이번 주 장애",
    # -- heartbeats --
    "cmd.heartbeats": "하트비트(데드맨 스위치): 마지막 핑과 상태",
    "heartbeats.none": (
        "등록된 하트비트가 없습니다. 서버에서 추가하세요: "
        "<code>sunflow-ops heartbeat add NAME --every 1h --grace 10m</code>"
    ),
    "heartbeats.title": "<b>하트비트 ({count})</b>",
    "heartbeats.line": (
        "{badge} <b>{name}</b> · {state} · 주기 {every} (유예 {grace}) · {severity}\n"
        "    마지막 핑 {last} · 기한 {due}"
    ),
    "heartbeats.ago": "{delta} 전",
    "heartbeats.never": "없음",
    "heartbeats.state.up": "정상",
    "heartbeats.state.waiting": "첫 핑 대기 중",
    "heartbeats.state.late": "지연 (유예 중)",
    "heartbeats.state.down": "누락",
    # korean branch
    "health.reason.timeout": "{seconds}초 안에 응답 없음",
    "health.reason.error": "오류: {error}",
    "health.reason.not_configured": "설정되지 않음",
    "health.reason.reachable": "연결됨",
    "health.reason.fal_reachable": "{model} 연결됨",
    "health.reason.last_call": (
        "마지막 실제 호출({operation}, {at}) 실패, {status}{failures}회 연속: {error}"
    ),
    "health.reason.last_ok": "마지막 호출 성공: {at}",
    "health.reason.no_call": "아직 호출 없음",
    "health.reason.token_days": "{days}일 남음",
    "health.reason.token_no_expiry": "만료일 모름",
    "health.reason.token_expired": "만료됨",
    "health.reason.token_unauthorized": "Graph API 가 401 을 응답함 (장애 #{id})",
    "health.reason.token_invalid": "만료됨: {error}",
    "health.reason.restart": "; 재시작 필요 (.env 의 토큰이 다름)",
    "health.reason.stats_never": "수집된 적 없음",
    "health.reason.stats_stale": "오래됨: {hours}시간 전 (한도 {limit}시간)",
    "health.reason.stats_age": "{minutes}분 전",
    "health.reason.stats_failing": "; {since}부터 수집 실패: {error}",
    "health.reason.sse_healthy": "스트리밍 중 (열린 연결 {connections}개)",
    "health.reason.sse_degraded": "MAX_SSE_CONNECTIONS 도달: 새 스트림을 거부합니다",
    "health.reason.sse_down": "허브 타이머가 멈춤 (하트비트와 정리 중단)",
    "health.reason.redis_down": "연결 불가 ({error}): 이벤트를 게시할 수 없음",
    "health.reason.redis_resubscribing": "연결됨; SSE 채널 재구독 중",
    "health.reason.redis_up": "정상",
    "health.reason.heartbeats_overdue": "기한 초과: {names}",
    "health.reason.heartbeats_on_time": "{count}개 정상",
    "health.reason.leader_leads": "{instance} 리더 (펜싱 토큰 {token})",
    "health.reason.leader_follows": "{instance} 대기 (리더: {holder})",
    "health.reason.leader_none": "{instance} 대기; 현재 리더 없음",
    "health.reason.scheduler_down": "실행 중 아님",
    "health.reason.scheduler_jobs": "예약 작업 {count}개",
    "health.reason.database_ok": "읽기·쓰기 정상",
    "health.reason.database_fails": "쓰기 실패: {error}",
    "health.reason.escalation_ok": "밀린 단계 없음",
    "health.reason.escalation_overdue": "{count}건 지연; 가장 오래된 #{id} {late}초",
    "health.reason.telegram_off": "봇 꺼짐 (TELEGRAM_BOT_TOKEN 미설정)",
    "health.reason.telegram_getme": "getMe 실패: {error}",
    "health.reason.telegram_failing": "{since}부터 전송 실패: {error}",
    "health.reason.telegram_ok": "{bot}, 대기 {queued}건",
    "health.reason.open_p0": "; 진행 중인 P0 장애 #{id}",
    "change.retries.none": "아직 열려 있고 확인되지 않았습니다",
    "error.not_trace_id": (
        "⚠️ <code>{value}</code> 은(는) 트레이스 ID 가 아닙니다 (예: SF-20260130-091500-a1b2)"
    ),
    "error.no_trace": "⚠️ 트레이스 <code>{value}</code> 이(가) 없습니다",
    "error.not_backup_id": (
        "⚠️ <code>{value}</code> 은(는) 백업 ID 가 아닙니다 (예: 20260130-091500-a1b2)"
    ),
    "error.no_backup": (
        "⚠️ 백업 <code>{value}</code> 이(가) 없습니다. /backup 으로 목록을 확인하세요"
    ),
    "error.backup_corrupt": (
        "⚠️ 백업 <code>{value}</code> 이(가) 손상되었습니다 ({file}). 다른 백업을 복원하세요"
    ),
    "error.no_job": "⚠️ 작업 #{id} 이(가) 없습니다",
    "error.not_job": "⚠️ <code>{value}</code> 은(는) 작업 번호가 아닙니다",
    "error.expiry_days": "⚠️ 만료일은 1~365일입니다 ({value} 아님)",
    "error.caption": (
        "⚠️ 인스타그램이 받지 않는 캡션입니다 (길이 {length}/{max_length}자, 해시태그 "
        "{hashtags}/{max_hashtags}개, 멘션 {mentions}/{max_mentions}개; 비어 있으면 안 됩니다)"
    ),
    "error.not_set": "⚠️ 서버에 {setting} 이(가) 설정되지 않았습니다",
    "notify.text": "SunFlow Ops 테스트 메시지 — {actor}, {at}",
    "notify.reason.sent_to": "{to} 로 전송함",
    "notify.reason.not_set": "{setting} 이(가) 설정되지 않음",
    "notify.reason.http": "HTTP {status}",
    "notify.reason.error": "실패: {error}",
    "job.line": "#{id} {work} · {state} {done}/{total}",
    "job.next": "{delta} 후 재시도",
    "job.state.failed": "실패",
    "job.state.running": "실행 중",
    "job.state.succeeded": "성공",
    "job.state.exhausted": "재시도 소진",
    "trace.status.ok": "정상",
    "trace.status.error": "오류",
    "trace.status.running": "실행 중",
    "trace.status.skipped": "건너뜀",
    "backup.restored.text": (
        "♻️ {id} 복원 완료 ({files}); 복원 전 상태는 백업 {snapshot} 입니다. "
        "적용하려면 sunflow-ops serve 를 재시작하세요."
    ),
    "backup.restored.nothing": "쓸 파일 없음",
    "error.job_running": "⚠️ 작업 #{id} 이(가) 이미 실행 중입니다. 두 번 시작하지 않습니다",
    "error.job_succeeded": "⚠️ 작업 #{id} 은(는) 이미 성공했습니다",
    "error.oncall_range": "⚠️ 당번 지정 기간은 5분에서 30일 사이입니다. 예: 8h",
    # -- amgroup: an Alertmanager group's card --
    "card.alerts": "알림: 발생 중 {firing}건, 해결 {resolved}건",
    "card.alerts.more": "  외 {count}건 (전체 목록: <code>/api/incidents/{id}</code>)",
    # -- storm digests (branch digest) --
    "storm.title": "🌪 <b>스톰 요약</b>: 알림 <b>{total}</b>건을 이 메시지에 모았습니다",
    "storm.why": (
        "텔레그램이 그룹에 1분 동안 보낼 수 있는 것보다 새 알림이 많아 하나씩 올리지 않고 "
        "여기에 모았습니다. P0·P1 알림은 계속 각자 카드로 올라갑니다."
    ),
    "storm.severities": "심각도별: {counts}",
    "storm.sources": "출처별: {counts}",
    "storm.sources_other": "그 밖에 {count}",
    "storm.states": (
        "진행 중 {open} · 해결 {resolved} · 카드 게시 {carded} · 총 발생 {occurrences}회"
    ),
    "storm.newest": "최근 알림:",
    "storm.line": "{badge} #{id} {title}",
    "storm.since": "{at}부터 스톰 중, 마지막 변경 {updated}: 이 메시지가 계속 따라갑니다.",
    "storm.closed": (
        "✅ 스톰 종료 ({since}–{at}): 새 알림은 더 모이지 않고, 상태는 계속 반영됩니다."
    ),
    "storm.button.list": "📋 목록 ({count})",
    "storm.button.entry": "{badge} #{id} {title}",
    "storm.button.prev": "◀ 최신",
    "storm.button.next": "이전 ▶",
    "storm.list.title": (
        "🌪 <b>스톰 요약</b>: 알림 {total}건 중 {first}–{last}번째 (최신순). "
        "누르면 그 알림의 카드를 올립니다."
    ),
    "storm.list.line": "{badge} #{id} {title} · {state}{carded}",
    "storm.list.carded": " · 카드 있음",
    "storm.opened": "#{id} 카드를 올립니다.",
    "storm.already": "#{id}은(는) 이미 카드가 있습니다.",
    "storm.gone": "해당 스톰 요약이 더 이상 없습니다.",
    # 우리 서비스가 쓰는 장애 설명 (`AlertIn.wording`): 일반 텍스트, 값은 그대로.
    "desc.fal": (
        "fal.ai: {error}. 작업은 {schedule} 간격으로 재시도합니다. 마지막 재시도는 "
        "content/images/<주제>/archive/ 에 이미지가 있으면 그것을 게시합니다. fal.ai 상태 "
        "페이지를 확인하세요. 재시도: sunflow-ops generate <주제> --retry"
    ),
    "desc.fal_archive": (
        "fal.ai: {error}. 작업은 {schedule} 간격으로 재시도합니다. 마지막 재시도는 "
        "content/images/<주제>/archive/ 에 이미지가 있으면 그것을 게시합니다. fal.ai 상태 "
        "페이지를 확인하세요. 재시도: sunflow-ops generate <주제> --retry. 이번 게시에는 "
        "보관 이미지 {image} 을(를) 썼습니다."
    ),
    "desc.cloudinary": (
        "{error}. 로컬 파일은 그대로 있습니다: {path}. CLOUDINARY_URL 과 Cloudinary 콘솔의 "
        "사용량을 확인하세요. 직접 업로드: sunflow-ops upload {path}"
    ),
    "desc.instagram_429": (
        "{error}. 재시도 간격은 {schedule} 입니다 (인스타그램이 요청하면 더 깁니다). 하루 "
        "한 건만 게시하세요 (PUBLISH_DAILY_LIMIT)."
    ),
    "desc.instagram_429_after": (
        "{error}. Retry-After {wait}초. 재시도 간격은 {schedule} 입니다 (인스타그램이 "
        "요청하면 더 깁니다). 하루 한 건만 게시하세요 (PUBLISH_DAILY_LIMIT)."
    ),
    "desc.instagram_403": "{error}. 이 계정은 게시할 수 없습니다: Meta 에서 권한을 확인하세요.",
    "desc.instagram_error": "{error}. 작업은 {schedule} 간격으로 재시도합니다.",
    "desc.publish_blocked": "{error}. 고친 뒤: sunflow-ops publish {topic} --retry",
    "desc.stats": (
        "{error}. 복구: sunflow-ops stats collect --force; sunflow-ops stats restart. "
        "collect_stats 작업은 {schedule} 간격으로 재시도합니다."
    ),
    "desc.heartbeat": (
        "하트비트 {name} 은(는) {every} 마다 핑을 기다립니다 (유예 {grace}). 기한은 {due} "
        "였습니다. 다음 핑이 오면 이 장애는 해결됩니다: POST 또는 GET "
        "/api/heartbeats/{name}/ping"
    ),
    "desc.database": "데이터베이스가 쓰기를 거부합니다: {error}",
    "desc.unauthorized": "{where} 요청이 거부되었습니다 (401).\n\n{guide}",
    "desc.where.publishing": "게시",
    "desc.where.stats collection": "통계 수집",
}

# The titles our own services give the incidents they open (services/tokens.py, stats.py,
# heartbeats.py, retry.py, health.py, probe.py, pipeline.py), by their English text; the
# {fields} are the incident's own values, kept as they are. An alert's own title is never here.
TITLES: dict[str, str] = {
    "Instagram token expired: the Graph API answers 401": (
        "인스타그램 토큰 만료: Graph API가 401 응답"
    ),
    "Instagram token expired": "인스타그램 토큰 만료",
    "Instagram token warning: {days} days left": "인스타그램 토큰 경고: {days}일 남음",
    "Instagram token critical: {days} days left": "인스타그램 토큰 위험: {days}일 남음",
    "Instagram token warning: ": "인스타그램 토큰 경고",
    "Instagram token critical: ": "인스타그램 토큰 위험",
    "Instagram stats collection failing": "인스타그램 통계 수집 실패",
    "Heartbeat {name} missed: never pinged since it was added": (
        "하트비트 {name} 누락: 추가된 뒤 핑이 한 번도 없음"
    ),
    "Heartbeat {name} missed: no ping since {last}": "하트비트 {name} 누락: {last} 이후 핑 없음",
    "{work} failing": "{work} 작업 실패",
    "Health check: {name} is down": "상태 점검: {name} 다운",
    "Image generation failing (FLUX.2 on fal.ai)": "이미지 생성 실패 (fal.ai의 FLUX.2)",
    "Cloudinary upload failing": "Cloudinary 업로드 실패",
    "Instagram API rate limit (429)": "인스타그램 API 호출 한도 초과 (429)",
    "Instagram publishing blocked (403)": "인스타그램 게시 차단 (403)",
    "Instagram API error": "인스타그램 API 오류",
    "Publishing {topic} blocked": "{topic} 게시 차단",
}

# The built-in ladder's step messages (services/policy.py), by their English text.
LADDER: dict[str, str] = {
    "Automatic alert to the team chat": "팀 채팅방으로 자동 알림",
    "30 min: status of the automatic retries": "30분: 자동 재시도 현황",
    "1 h: paging the PD": "1시간: PD 호출",
    "4 h: manual intervention required": "4시간: 수동 개입 필요",
    "4 h: the P2 response time has passed; paging the PD": "4시간: P2 응답 시간 경과 — PD 호출",
    "8 h: manual intervention required": "8시간: 수동 개입 필요",
    "24 h: the P3 response time has passed; paging the PD": "24시간: P3 응답 시간 경과 — PD 호출",
}
