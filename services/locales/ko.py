"""The texts services write themselves, in Korean: the words the chat and the documents share
(severities, timeline entries), post-mortems, checklists, the token guide and the weekly
report. The chat's own messages are the bot's catalogue (bot/locales), which takes the shared
words from here."""

TEXTS: dict[str, str] = {
    # Shared with the chat (bot/locales takes every key starting with one of SHARED).
    "severity.meaning.P0": "서비스 중단",
    "severity.meaning.P1": "주요 기능 장애",
    "severity.meaning.P2": "부분 장애",
    "severity.meaning.P3": "경미한 문제",
    "kind.triggered": "발생",
    "kind.deduplicated": "재발생",
    "kind.acknowledged": "확인",
    "kind.resolved": "해결",
    "kind.reopened": "재개",
    "kind.annotated": "메모",
    "kind.snoozed": "보류",
    "kind.unacknowledged": "확인 기간 만료",
    "kind.escalated": "에스컬레이션",
    "kind.deadline_missed": "응답 기한 초과",
    "kind.checklist": "체크리스트",
    "kind.postmortem": "사후 분석",
    # Who acted, when it is one of our services (people are named as they are).
    "actor.intake": "알림 수신",
    "actor.escalation": "에스컬레이션",
    "actor.health_check": "상태 점검",
    "actor.token_monitor": "토큰 감시",
    "actor.stats_collector": "통계 수집기",
    "actor.retry": "재시도",
    "actor.pipeline": "파이프라인",
    "actor.publish": "게시",
    "actor.cli": "명령줄",
    # Post-mortems (services/postmortem.py).
    "postmortem.title": "사후 분석: 장애 #{id} — {title}",
    "postmortem.severity": "등급",
    "postmortem.source": "출처",
    "postmortem.state": "상태",
    "postmortem.summary": "요약",
    "postmortem.time": "1. 장애 시간",
    "postmortem.started": "시작 (첫 알림)",
    "postmortem.acknowledged": "확인",
    "postmortem.resolved": "복구 완료",
    "postmortem.tta": "확인까지 걸린 시간",
    "postmortem.ttr": "복구까지 걸린 시간",
    "postmortem.deadline": "대응 기한",
    "postmortem.deadline_missed": "초과",
    "postmortem.deadline_met": "준수",
    "postmortem.impact": "2. 영향 범위",
    "postmortem.occurrences": "알림 발생 횟수",
    "postmortem.jobs": "영향받은 작업",
    "postmortem.traces": "트레이스",
    "postmortem.impact_people": "영향받은 사용자와 작업",
    "postmortem.cause": "3. 근본 원인",
    "postmortem.recovery": "4. 복구 조치",
    "postmortem.prevention": "5. 재발 방지",
    "postmortem.checklists": "체크리스트",
    "postmortem.unticked": "미완료",
    "postmortem.missing": "_(작성 필요: `/postmortem {id} {field} 내용` 으로 답장)_",
    "postmortem.none": "기록 없음",
    "postmortem.not_yet": "아직",
    "postmortem.state.triggered": "발생",
    "postmortem.state.acknowledged": "확인됨",
    "postmortem.state.resolved": "해결됨",
    "postmortem.late_by": " ({seconds}초 지연)",
    "postmortem.repeated": "재발생 ({count}회)",
    # Checklists and their items (services/checklists.py).
    "checklist.during": "장애 대응 시",
    "checklist.recovery": "복구 완료 시",
    "checklist.health_check": "헬스체크 실행",
    "checklist.error_logs": "에러 로그 확인",
    "checklist.trace_ids": "트레이스 ID 수집",
    "checklist.recovery_attempt": "복구 시도",
    "checklist.verification": "검증 테스트",
    "checklist.postmortem": "사후 분석",
    "checklist.normal_operation": "정상 동작 확인",
    "checklist.queued_work": "대기 중 작업 처리",
    "checklist.notification": "알림 전송",
    "checklist.documented": "문서화",
    # The weekly report's summary (services/reports.py).
    "report.title": "주간 장애 보고서",
    "report.incidents": "장애 {total} ({by_severity})",
    "report.times": (
        "{severity}: 확인 평균 {ack_mean}, p90 {ack_p90}; "
        "복구 평균 {resolve_mean}, p90 {resolve_p90}"
    ),
    "report.missed": "대응 기한 초과: {count}",
    "report.open": "아직 열린 장애: {count}",
    "report.noisiest": "가장 잦은 알림:",
    # The token renewal guide (services/tokens.py): the playbook's steps.
    "token.guide": """Instagram 토큰 갱신 가이드
1. 상태 확인: sunflow-ops token status (봇: /token)
2. Meta Developer Console에서 새 장기 토큰 발급
   (https://developers.facebook.com/apps -> 앱 -> Instagram -> API 설정)
3. .env 업데이트: INSTAGRAM_ACCESS_TOKEN="새_토큰" 후 sunflow-ops serve 재시작
4. 토큰 만료일 등록: sunflow-ops token set-expiry 60 (봇: /token set_expiry 60)
5. 게시 재시도: sunflow-ops publish <주제> --retry (봇: /retry)
6. 검증: sunflow-ops health, sunflow-ops publish <주제> --dry-run""",
}
