#!/usr/bin/env bash
# The main job (README "Quick start"): on a fresh Debian machine, installs
# what is missing, starts the local stack (Kafka + Redis), builds the
# workers, runs a lead worker and a deal worker, sends the sample streams
# from deploy/sample/ and shows what came out: the derived events, the dead
# letters and the leads' and deals' state in Redis, as JSON.  It ends with
# the analytics: a quarter of a sales team (deploy/sample/pipeline-*.jsonl)
# through fresh workers, then the forecast, stages and sources reports.
#
# Each run uses its own topic and key prefix (printed), so runs do not mix.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

deploy/stack.sh start
eval "$(deploy/stack.sh env)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null

run="demo-$(date +%s)"
export PL_TOPIC_PREFIX="$run." PL_KEY_PREFIX="$run:"
export PL_BROKERS PL_REDIS
logdir=".stack/$run"
mkdir -p "$logdir"
ctl=build/pipelinectl

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "topics ${PL_TOPIC_PREFIX}sales.* and Redis keys ${PL_KEY_PREFIX}*"
$ctl topics create --partitions 6 sales.leads sales.deals sales.pipeline \
    sales.alerts sales.dlq

# The deal worker runs the seconds-scale rules (deploy/rules/seconds.yaml:
# stale after seconds instead of days) so that alerts arrive while you watch.
build/deal_worker --set rules.file=deploy/rules/seconds.yaml \
    --set timers.interval=200ms >"$logdir/deal_worker.log" 2>&1 &
deal_worker=$!
build/lead_worker >"$logdir/lead_worker.log" 2>&1 &
lead_worker=$!
trap 'kill "$deal_worker" "$lead_worker" 2>/dev/null || true' EXIT

say "sending deploy/sample/leads.jsonl to sales.leads"
$ctl produce sales.leads deploy/sample/leads.jsonl
say "sending deploy/sample/deals.jsonl and two poison messages to sales.deals"
$ctl produce sales.deals deploy/sample/deals.jsonl
$ctl produce --raw --key D-1003 sales.deals deploy/sample/poison.txt

say "sending a live deal: in closing, closing tomorrow, no contract sent yet"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
tomorrow=$(date -u -d tomorrow +%Y-%m-%d)
printf '{"type":"deal.created","event_id":"live-%s","occurred_at":"%s","deal_id":"D-LIVE","name":"Live deal","owner":"ana","amount":5000,"expected_close_date":"%s","stage":"closing"}\n' \
    "$run" "$now" "$tomorrow" | $ctl produce sales.deals

# 16 + 1 derived deal events, 8 lead events and 2 dead letters are
# expected; wait for them.
for _ in $(seq 1 120); do
    n=$($ctl tail --from-beginning --until-end sales.pipeline | wc -l)
    q=$($ctl tail --from-beginning --until-end sales.dlq | wc -l)
    [ "$n" -ge 25 ] && [ "$q" -ge 2 ] && break
    sleep 0.5
done

say "sales.pipeline: lead status changes (scored, qualified, converted)"
$ctl tail --from-beginning --until-end sales.pipeline | grep '"type":"lead\.'
say "sales.deals: deal.created published by the lead worker for the conversion"
$ctl tail --from-beginning --until-end sales.deals | grep '"lead_id"' || true
say "sales.pipeline: deal stage changes and rejections"
$ctl tail --from-beginning --until-end sales.pipeline | grep '"type":"deal\.' 
say "pending timers (pipelinectl timers)"
$ctl timers
say "waiting for D-LIVE's alerts: closing_soon now, stale after 5s," \
    "contract_not_sent after 6s"
for _ in $(seq 1 60); do
    a=$($ctl tail --from-beginning --until-end sales.alerts | grep -c D-LIVE || true)
    [ "$a" -ge 3 ] && break
    sleep 0.5
done
say "sales.alerts (stale deals and close reminders)"
$ctl tail --from-beginning --until-end sales.alerts
say "sales.dlq (dead letters, with the headers that say why)"
$ctl tail --from-beginning --until-end --meta sales.dlq
for l in L-2001 L-2002 L-2003; do
    say "lead $l in Redis (pipelinectl lead $l)"
    $ctl lead "$l"
done
for d in D-1001 D-1002 D-1003 D-L-2001 D-LIVE; do
    say "deal $d in Redis (pipelinectl deal $d)"
    $ctl deal "$d"
done

kill -TERM "$deal_worker" "$lead_worker"
wait "$deal_worker" "$lead_worker" || true
trap - EXIT

# ---- analytics: a quarter of a sales team, and the three reports
# (its own prefix; the default rules, and no timers: the sample is in the
# past, so every deal would be stale at once)
export PL_TOPIC_PREFIX="$run-q." PL_KEY_PREFIX="$run-q:"
say "analytics: a quarter of a sales team (deploy/sample/pipeline-*.jsonl)" \
    "under ${PL_TOPIC_PREFIX}* and ${PL_KEY_PREFIX}*"
$ctl topics create --partitions 6 sales.leads sales.deals sales.pipeline \
    sales.alerts sales.dlq >/dev/null
build/deal_worker --set timers.interval=0 >"$logdir/q-deal_worker.log" 2>&1 &
deal_worker=$!
build/lead_worker >"$logdir/q-lead_worker.log" 2>&1 &
lead_worker=$!
trap 'kill "$deal_worker" "$lead_worker" 2>/dev/null || true' EXIT
$ctl produce sales.leads deploy/sample/pipeline-leads.jsonl
# the deals of converted leads are created by the lead worker: wait for
# them before their stage requests
want=$(grep -c '"lead.converted"' deploy/sample/pipeline-leads.jsonl)
for _ in $(seq 1 120); do
    n=$($ctl tail --from-beginning --until-end sales.deals | grep -c '"lead_id"' || true)
    [ "$n" -ge "$want" ] && break
    sleep 0.5
done
$ctl produce sales.deals deploy/sample/pipeline-deals.jsonl
# caught up: both groups have committed everything (a batch's analytics
# are folded before its offsets are committed)
for _ in $(seq 1 240); do
    lag=$($ctl lag --json | python3 -c 'import json,sys
print(sum(json.loads(l)["lag"] for l in sys.stdin if l.strip()))' 2>/dev/null || echo 1)
    [ "$lag" = 0 ] && break
    sleep 0.5
done
say "pipelinectl report forecast: revenue by expected close month"
$ctl report forecast
say "pipelinectl report stages: where deals get stuck"
$ctl report stages
say "pipelinectl report sources: which lead sources convert"
$ctl report sources
say "the same as JSON (pipelinectl report stages --json --owner ana)"
$ctl report stages --json --owner ana
kill -TERM "$deal_worker" "$lead_worker"
wait "$deal_worker" "$lead_worker" || true
trap - EXIT
say "worker logs: $logdir/; the stack keeps running" \
    "(deploy/stack.sh stop)"
echo "Look again with: PL_TOPIC_PREFIX=$PL_TOPIC_PREFIX $ctl tail" \
    "--from-beginning --until-end sales.pipeline"
