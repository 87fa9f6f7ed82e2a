// k6 script: open-loop (constant-arrival-rate) Open Inference Protocol load.
//
// RATE requests/s start on schedule whether or not earlier ones have been
// answered, so a stalling server cannot slow the arrivals and the latency
// percentiles carry no coordinated omission. When all MAX_VUS are busy, k6
// counts dropped_iterations instead of waiting (reported as dropped=).
//
//   k6 run -q -e URL=http://127.0.0.1:8080/v2/models/mlp_small/infer -e RATE=5000 -e DURATION=30s loadtest/oip.k6.js
//
// Without RATE it runs closed loop with VUS virtual users (like wrk).
// Env: URL (required), RATE, DURATION=30s, VUS=8, MAX_VUS=256, MODEL (sets FEATURES: mlp_small 16,
// mlp_wide 256), FEATURES, BATCH=1, INPUT=input.
// k6 itself is not packaged here: `go install go.k6.io/k6@latest` (a few minutes on 2 cores).
// Compare servers at the same RATE, about half of the slower one's closed-loop maximum: k6 costs
// ~200 µs of CPU per request open-loop, on the same cores as the server.
import http from 'k6/http';

const URL = __ENV.URL;
const DURATION = __ENV.DURATION || '30s';
const MODEL = __ENV.MODEL || 'mlp_small';
const FEATURES = parseInt(__ENV.FEATURES || ({ mlp_small: 16, mlp_wide: 256 }[MODEL] || 16), 10);
const BATCH = parseInt(__ENV.BATCH || '1', 10);
const INPUT = __ENV.INPUT || 'input';
const RATE = __ENV.RATE ? parseInt(__ENV.RATE, 10) : 0;
const VUS = parseInt(__ENV.VUS || '8', 10);
const MAX_VUS = parseInt(__ENV.MAX_VUS || '256', 10);

if (!URL) throw new Error('set -e URL=http://127.0.0.1:PORT/v2/models/NAME/infer');

const row = [];
for (let i = 0; i < FEATURES; i++) row.push(Math.fround((i % 7) / 7 - 0.5));
const data = [];
for (let r = 0; r < BATCH; r++) data.push(...row);
const BODY = JSON.stringify({ inputs: [{ name: INPUT, shape: [BATCH, FEATURES], datatype: 'FP32', data }] });
const PARAMS = { headers: { 'Content-Type': 'application/json' }, timeout: '30s' };

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['med', 'p(90)', 'p(99)', 'max'],
  scenarios: RATE
    ? {
        open: {
          executor: 'constant-arrival-rate',
          rate: RATE,
          timeUnit: '1s',
          duration: DURATION,
          preAllocatedVUs: Math.min(MAX_VUS, 64),
          maxVUs: MAX_VUS,
          gracefulStop: '5s',
        },
      }
    : { closed: { executor: 'constant-vus', vus: VUS, duration: DURATION, gracefulStop: '5s' } },
};

export default function () {
  http.post(URL, BODY, PARAMS);
}

export function handleSummary(d) {
  const m = d.metrics;
  const dur = m.http_req_duration.values;
  const reqs = m.http_reqs.values;
  const failed = m.http_req_failed ? m.http_req_failed.values.passes : 0;
  const dropped = m.dropped_iterations ? m.dropped_iterations.values.count : 0;
  const line =
    `RESULT mode=${RATE ? 'open rate=' + RATE : 'closed vus=' + VUS} requests=${reqs.count} rps=${reqs.rate.toFixed(1)} ` +
    `p50_ms=${dur.med.toFixed(3)} p90_ms=${dur['p(90)'].toFixed(3)} p99_ms=${dur['p(99)'].toFixed(3)} ` +
    `max_ms=${dur.max.toFixed(3)} failed=${failed} dropped=${dropped}\n`;
  return { stdout: line };
}
