import MoECoordinator
import MoEServing

/// The coordinator's web page: `/` (HTML that polls `/status.json` every second and draws a heatmap of demand,
/// layer × expert, the expert groups with their replicas and state, the replicas, and recent scaling decisions),
/// `/status.json` (`StatusReport`) and `/metrics`.
public enum StatusPage {
    /// - Parameter status: the coordinator's status now.
    public static func routes(status: @escaping @Sendable () async -> CoordinatorStatus)
        -> HTTPEndpoint.Routes
    {
        let (metricsPath, metrics) = PrometheusExport.route()
        return [
            "/": { HTTPEndpoint.Response(contentType: "text/html; charset=utf-8", text: Self.html) },
            "/status.json": {
                let report = StatusReport(await status())
                do {
                    return HTTPEndpoint.Response(contentType: "application/json", text: try report.json())
                } catch {
                    return HTTPEndpoint.Response(
                        status: .internalServerError, contentType: "text/plain", text: "\(error)\n")
                }
            },
            metricsPath: metrics,
        ]
    }

    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>MoEMesh coordinator</title>
        <style>
          body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d232b; background: #f7f8fa; }
          h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 15px; margin: 24px 0 8px; }
          .summary { color: #4a5563; }
          table { border-collapse: collapse; background: #fff; }
          th, td { padding: 4px 10px; border: 1px solid #dde1e7; text-align: right; }
          th { background: #eef1f5; font-weight: 600; } td.text { text-align: left; }
          table.heatmap td { width: 46px; height: 30px; text-align: center; color: #fff; font-weight: 600; border: 2px solid #f7f8fa; }
          table.heatmap td.none { color: #8a94a3; } table.heatmap td.pruned { background: #6b7280 !important; }
          .legend { color: #4a5563; font-size: 12px; margin-top: 6px; }
          .state-active { color: #0a7f3f; } .state-idle { color: #8a6d00; } .state-scaled { color: #6b7280; }
          .state-starting, .state-draining { color: #b45309; }
          ul.decisions { background: #fff; border: 1px solid #dde1e7; padding: 8px 12px 8px 28px; margin: 0; }
          .error { color: #b91c1c; }
        </style>
        </head>
        <body>
        <h1>MoEMesh coordinator</h1>
        <div class="summary" id="summary">loading…</div>
        <h2>Load per expert (rows/s routed; number: replicas serving it)</h2>
        <table class="heatmap" id="heatmap"></table>
        <div class="legend" id="legend"></div>
        <h2>Expert groups</h2>
        <table id="groups"></table>
        <h2>Replicas</h2>
        <table id="replicas"></table>
        <h2>Recent scaling decisions</h2>
        <ul class="decisions" id="decisions"></ul>
        <script>
        function cell(tag, text, cls) { const c = document.createElement(tag); c.textContent = text; if (cls) c.className = cls; return c; }
        function row(table, values, tag, classes) {
          const tr = document.createElement("tr");
          values.forEach((v, i) => tr.appendChild(cell(tag || "td", v, classes && classes[i])));
          table.appendChild(tr); return tr;
        }
        function shade(fraction) {
          // From slate (idle) through green and amber to red (busiest).
          const stops = [[71, 85, 105], [22, 163, 74], [234, 179, 8], [220, 38, 38]];
          const x = Math.max(0, Math.min(1, fraction)) * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), t = x - i;
          const c = stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * t));
          return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
        }
        function render(s) {
          document.getElementById("summary").textContent =
            `model ${s.model_type} · scaler ${s.scaler} · autoscale ${s.autoscale ? "on" : "off"} · topology v${s.topology_version}` +
            ` · routers ${s.routers.length} · replica balancedness ${s.replica_balancedness.toFixed(2)}`;
          const layers = [...new Set(s.experts.map(e => e.layer))], columns = [...new Set(s.experts.map(e => e.expert))];
          const peak = Math.max(1e-9, ...s.experts.map(e => e.demand_rows_per_second));
          const heat = document.getElementById("heatmap"); heat.replaceChildren();
          row(heat, ["", ...columns.map(c => c === "shared" ? "shared" : "e" + c)], "th");
          for (const layer of layers) {
            const tr = row(heat, ["layer " + layer], "th");
            for (const column of columns) {
              const e = s.experts.find(x => x.layer === layer && x.expert === column);
              const td = cell("td", e ? (e.pruned ? "x" : e.serving_replicas === 0 ? "·" : String(e.serving_replicas)) : "");
              if (e) {
                td.className = "cell" + (e.pruned ? " pruned" : "") + (e.serving_replicas === 0 ? " none" : "");
                td.dataset.demand = e.demand_rows_per_second.toFixed(1);
                td.style.background = shade(e.demand_rows_per_second / peak);
                td.title = `layer ${layer} expert ${column}: ${e.demand_rows_per_second.toFixed(1)} rows/s, ${e.serving_replicas} replicas`;
              }
              tr.appendChild(td);
            }
          }
          document.getElementById("legend").textContent = `busiest expert: ${peak < 1e-6 ? 0 : peak.toFixed(0)} rows/s · x: pruned · ·: no replica (scaled to zero)`;
          const groups = document.getElementById("groups"); groups.replaceChildren();
          row(groups, ["group", "state", "replicas (serving / desired)", "rows/s"], "th");
          for (const g of s.groups) {
            const stateClass = "text state-" + g.state.split(" ")[0];
            row(groups, [g.group, g.state, `${g.serving_replicas} / ${g.desired_replicas}`, g.demand_rows_per_second.toFixed(0)], "td", ["text", stateClass]);
          }
          const replicas = document.getElementById("replicas"); replicas.replaceChildren();
          row(replicas, ["replica", "group", "endpoint", "routers reach it by", "state", "rows/s (5 s)", "in flight", "p50 ms (5 s)", "p99 ms (5 s)"], "th");
          for (const r of s.replicas) {
            // No call ended in the window: no latency to show, rather than 0.00 ms.
            const idle = r.rows_per_second === 0 && r.latency_p50_ms === 0;
            row(replicas, [r.replica_id, r.group, r.endpoint, r.links.join("; ") || "-", r.state, r.rows_per_second.toFixed(0),
                           r.in_flight_rows, idle ? "no calls" : r.latency_p50_ms.toFixed(2), idle ? "-" : r.latency_p99_ms.toFixed(2)], "td",
                ["text", "text", "text", "text", "text"]);
          }
          const decisions = document.getElementById("decisions"); decisions.replaceChildren();
          for (const d of s.decisions.slice(-12).reverse()) {
            decisions.appendChild(cell("li", `${new Date(d.at_unix_ms).toLocaleTimeString()} ${d.group}: ${d.from_replicas} → ${d.to_replicas} (${d.reason})`));
          }
          if (s.decisions.length === 0) decisions.appendChild(cell("li", "none yet"));
        }
        async function refresh() {
          try {
            const response = await fetch("/status.json", { cache: "no-store" });
            render(await response.json());
          } catch (error) {
            document.getElementById("summary").replaceChildren(cell("span", "coordinator unreachable: " + error, "error"));
          }
        }
        refresh(); setInterval(refresh, 1000);
        </script>
        </body>
        </html>
        """#
}
