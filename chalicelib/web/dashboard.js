/* testbuy programme dashboard: draws GET /programs/{id}/dashboard with plain SVG. No library, no build step.
   Every figure is also shown as text in a table beside its chart; each cell carries data-k (its key) and data-v
   (the raw value of the API's JSON) so that tests can compare the page with the data. The DOM is built with
   createElement/textContent only: nothing from the data is ever parsed as HTML. */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var COLORS = ["#2b6cb0", "#dd6b20", "#2f855a", "#805ad5", "#c53030", "#718096"];
  var CUR = "";
  var DIGITS = 2;
  var EMBEDDED = false;  // drawn from data embedded in the file (testbuy report), not fetched

  function el(tag, attrs, kids) {
    var n = document.createElement(tag);
    for (var k in attrs || {}) { if (attrs[k] !== undefined && attrs[k] !== null) n.setAttribute(k, attrs[k]); }
    (kids || []).forEach(function (c) { n.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return n;
  }
  function sv(tag, attrs, text) {
    var n = document.createElementNS(SVGNS, tag);
    for (var k in attrs || {}) { n.setAttribute(k, attrs[k]); }
    if (text !== undefined) { n.textContent = text; }
    return n;
  }
  function clear(id) { var n = document.getElementById(id); while (n.firstChild) { n.removeChild(n.firstChild); } return n; }

  // --- formatting (money from integer minor units, exactly; rates as percentages) ---
  function group(s) { return s.replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
  function money(v) {
    if (v === null || v === undefined) { return "\u2013"; }
    var neg = v < 0, a = Math.abs(v), base = Math.pow(10, DIGITS);
    var whole = Math.floor(a / base), frac = String(a % base);
    while (frac.length < DIGITS) { frac = "0" + frac; }
    return (neg ? "-" : "") + group(String(whole)) + (DIGITS ? "." + frac : "") + " " + CUR;
  }
  function pct(v) { return v === null || v === undefined ? "\u2013" : (v * 100).toFixed(2) + "%"; }
  function pp(v) { return v === null || v === undefined ? "\u2013" : (v >= 0 ? "+" : "") + v.toFixed(4) + " pp"; }
  function num(v) { return v === null || v === undefined ? "\u2013" : group(String(v)); }
  function durations(max) {  // a formatter of durations given in hours, in one unit that suits the largest
    var unit = max * 3600 < 120 ? ["s", 3600] : max < 48 ? ["h", 1] : ["d", 1 / 24];
    return function (v) { return v === null || v === undefined ? "\u2013" : (v * unit[1]).toFixed(2) + " " + unit[0]; };
  }
  function when(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "\u2013"; }

  function cell(key, value, fmt) {
    return el("td", { "data-k": key, "data-v": value === null || value === undefined ? "" : String(value) }, [fmt(value)]);
  }
  function table(head, rows) {
    return el("table", {}, [el("thead", {}, [el("tr", {}, head.map(function (h) { return el("th", {}, [h]); }))]),
      el("tbody", {}, rows)]);
  }
  function note(text) { return el("p", { "class": "note" }, [text]); }
  function empty(id, text) { clear(id).appendChild(el("p", { "class": "empty" }, [text])); }
  function legend(names) {
    return el("div", { "class": "legend" }, names.map(function (n, i) {
      return el("span", {}, [el("i", { style: "background:" + COLORS[i % COLORS.length] }), n]);
    }));
  }
  function nice(max) {
    if (!(max > 0)) { return 1; }
    var p = Math.pow(10, Math.floor(Math.log10(max))), m = max / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  // --- charts ---
  function hbars(id, rows, series, fmt, cap) {
    // rows: [{label, values: [..]}]; one bar per series value
    if (!rows.length) { empty(id, "nothing yet"); return; }
    var W = 560, left = 170, right = 90, bh = 14, gap = 8, n = series.length;
    var H = rows.length * (n * bh + gap) + 24;
    var max = cap || nice(Math.max.apply(null, rows.map(function (r) { return Math.max.apply(null, r.values.map(function (v) { return v || 0; })); })));
    var s = sv("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
    var scale = function (v) { return (W - left - right) * Math.min(v || 0, max) / max; };  // a bar past the cap stops there; its label says how far
    rows.forEach(function (r, i) {
      var y0 = 4 + i * (n * bh + gap);
      s.appendChild(sv("text", { x: left - 6, y: y0 + n * bh / 2 + 4, "text-anchor": "end" }, r.label.length > 26 ? r.label.slice(0, 25) + "\u2026" : r.label));
      r.values.forEach(function (v, j) {
        s.appendChild(sv("rect", { x: left, y: y0 + j * bh, width: Math.max(scale(v), v ? 1 : 0), height: bh - 2, fill: COLORS[j % COLORS.length] }));
        s.appendChild(sv("text", { x: left + scale(v) + 4, y: y0 + j * bh + bh - 4 }, fmt(v)));
      });
    });
    s.appendChild(sv("line", { x1: left, x2: left, y1: 0, y2: H - 20, stroke: "#999" }));
    s.appendChild(sv("text", { x: W - right, y: H - 6, "text-anchor": "end" }, "scale: 0 \u2013 " + fmt(max)));
    var c = clear(id);
    if (n > 1) { c.appendChild(legend(series)); }
    c.appendChild(s);
  }

  function budgetChart(d) {
    var pts = d.burn_down;
    if (!pts.length) { empty("c-budget", "no ledger lines yet"); return; }
    var W = 560, H = 220, L = 112, R = 10, T = 10, B = 30;
    var t0 = Date.parse(pts[0].at), t1 = Date.parse(pts[pts.length - 1].at);
    if (t1 <= t0) { t1 = t0 + 1000; }
    var keys = ["funded", "reserved", "spent", "recovered"];
    var max = nice(Math.max.apply(null, pts.map(function (p) { return p.funded; }).concat([1])));
    var x = function (t) { return L + (W - L - R) * (t - t0) / (t1 - t0); };
    var y = function (v) { return T + (H - T - B) * (1 - v / max); };
    var s = sv("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
    [0, 0.5, 1].forEach(function (f) {
      s.appendChild(sv("line", { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), stroke: "#e2e6ec" }));
      s.appendChild(sv("text", { x: L - 4, y: y(max * f) + 4, "text-anchor": "end" }, money(Math.round(max * f))));
    });
    keys.forEach(function (k, i) {
      var dpath = pts.map(function (p, j) {
        var px = x(Date.parse(p.at)).toFixed(1), py = y(p[k]).toFixed(1);
        return (j ? "L" : "M") + px + " " + py;
      }).join(" ");
      if (pts.length === 1) { dpath += " L" + (W - R) + " " + y(pts[0][k]).toFixed(1); }
      s.appendChild(sv("path", { d: dpath, fill: "none", stroke: COLORS[i], "stroke-width": 2 }));
    });
    s.appendChild(sv("text", { x: L, y: H - 8 }, when(pts[0].at)));
    s.appendChild(sv("text", { x: W - R, y: H - 8, "text-anchor": "end" }, when(pts[pts.length - 1].at)));
    var c = clear("c-budget");
    c.appendChild(legend(keys));
    c.appendChild(s);
    // the forecast: spent now, projected at the end of the period, funded
    var f = d.forecast;
    var rows = [{ label: "spent now", values: [d.balance.spent] }, { label: "funded", values: [d.balance.funded] }];
    if (f.projected_spent_at_end !== null) { rows.splice(1, 0, { label: "projected at period end", values: [f.projected_spent_at_end] }); }
    var fc = el("div", { id: "c-forecast" });
    c.appendChild(fc);
    hbars("c-forecast", rows, ["money"], money, nice(Math.max(d.balance.funded, d.balance.spent, 1)));
  }

  function estimateChart(d) {
    var rows = d.estimates.rounds.concat([d.estimates.combined]);
    var have = rows.filter(function (r) { return r.prevalence !== null || r.hit_rate !== null; });
    if (!have.length) { empty("c-estimate", "no conclusive verdict yet"); return; }
    var W = 560, L = 150, R = 60, rh = 26, H = rows.length * rh + 30;
    var max = nice(Math.max.apply(null, rows.map(function (r) { return Math.max(r.ci_high || 0, r.hit_rate || 0); })));
    var x = function (v) { return L + (W - L - R) * v / max; };
    var s = sv("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
    rows.forEach(function (r, i) {
      var cy = 14 + i * rh;
      s.appendChild(sv("text", { x: L - 6, y: cy + 4, "text-anchor": "end" }, i === rows.length - 1 ? "combined" : "round " + (i + 1)));
      if (r.ci_low !== null && r.ci_high !== null) {
        s.appendChild(sv("line", { x1: x(r.ci_low), x2: x(r.ci_high), y1: cy, y2: cy, stroke: COLORS[0], "stroke-width": 3 }));
      }
      if (r.prevalence !== null) { s.appendChild(sv("circle", { cx: x(r.prevalence), cy: cy, r: 5, fill: COLORS[0] })); }
      if (r.hit_rate !== null) {
        var hx = x(r.hit_rate);
        s.appendChild(sv("path", { d: "M" + (hx - 5) + " " + (cy - 5) + " L" + (hx + 5) + " " + (cy + 5) + " M" + (hx - 5) + " " + (cy + 5) + " L" + (hx + 5) + " " + (cy - 5), stroke: COLORS[1], "stroke-width": 2 }));
      }
    });
    s.appendChild(sv("line", { x1: L, x2: W - R, y1: H - 22, y2: H - 22, stroke: "#999" }));
    [0, 0.5, 1].forEach(function (f) { s.appendChild(sv("text", { x: x(max * f), y: H - 8, "text-anchor": "middle" }, pct(max * f))); });
    var c = clear("c-estimate");
    c.appendChild(legend(["prevalence, 95% interval (design-weighted)", "raw hit rate"]));
    c.appendChild(s);
  }

  function refundChart(d) {
    var t = d.refund_rate;
    if (!t) { empty("c-refunds", "no marketplace refund feed ingested (POST /programs/{id}/marketplace-refunds)"); return; }
    var W = 560, H = 180, L = 50, B = 30, T = 14, m = t.months, bw = Math.min(60, (W - L - 10) / m.length - 6);
    var max = nice(Math.max.apply(null, m.map(function (r) { return r.rate; })));
    var s = sv("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
    m.forEach(function (r, i) {
      var h = (H - T - B) * r.rate / max, x0 = L + i * (bw + 6);
      s.appendChild(sv("rect", { x: x0, y: H - B - h, width: bw, height: h, fill: COLORS[0] }));
      s.appendChild(sv("text", { x: x0 + bw / 2, y: H - B - h - 3, "text-anchor": "middle" }, (r.rate * 100).toFixed(3) + "%"));
      s.appendChild(sv("text", { x: x0 + bw / 2, y: H - 10, "text-anchor": "middle" }, r.period));
    });
    s.appendChild(sv("line", { x1: L - 2, x2: W, y1: H - B, y2: H - B, stroke: "#999" }));
    clear("c-refunds").appendChild(s);
  }

  // --- the numbers beside each chart ---
  function render(d) {
    CUR = d.program.currency;
    try { DIGITS = new Intl.NumberFormat("en", { style: "currency", currency: CUR }).resolvedOptions().maximumFractionDigits; } catch (e) { DIGITS = 2; }
    document.getElementById("title").textContent = d.program.name + (EMBEDDED ? " \u2014 programme report" : " \u2014 programme dashboard");
    document.title = d.program.name + " \u2014 testbuy";
    clear("meta").appendChild(document.createTextNode(
      "programme " + d.program.program_id + " \u00b7 period " + when(d.program.period_start) + " to " + when(d.program.period_end) +
      " \u00b7 enforcement policy " + d.policy_version + " \u00b7 generated " + when(d.generated_at)));

    var b = d.balance, f = d.forecast;
    budgetChart(d);
    clear("n-budget").append(
      table(["figure", "amount"], ["funded", "available", "reserved", "captured", "recovered", "spent"].map(function (k) {
        return el("tr", {}, [el("td", {}, [k]), cell("balance." + k, b[k], money)]);
      }).concat([
        el("tr", {}, [el("td", {}, ["spend rate per day"]), cell("forecast.rate_per_day", f.rate_per_day, function (v) { return v === null ? "\u2013" : money(Math.round(v)); })]),
        el("tr", {}, [el("td", {}, ["projected spend at period end"]), cell("forecast.projected_spent_at_end", f.projected_spent_at_end, money)]),
        el("tr", {}, [el("td", {}, ["funds run out (at this rate)"]), cell("forecast.projected_exhausted_at", f.projected_exhausted_at, function (v) { return v ? when(v) : "not within the period"; })])
      ])),
      note("Forecast: " + f.method + "."));

    estimateChart(d);
    clear("n-estimate").append(table(["round", "conclusive", "hits", "hit rate", "prevalence", "95% low", "95% high", "method"],
      d.estimates.rounds.concat([d.estimates.combined]).map(function (r, i, all) {
        var k = i === all.length - 1 ? "combined" : "round." + r.label;
        return el("tr", {}, [el("td", {}, [(i === all.length - 1 ? "combined" : "round " + (i + 1) + ": " + r.label) + (r.status ? " (" + r.status + ")" : "")]), cell(k + ".conclusive", r.conclusive, num),
          cell(k + ".hits", r.hits, num), cell(k + ".hit_rate", r.hit_rate, pct), cell(k + ".prevalence", r.prevalence, pct),
          cell(k + ".ci_low", r.ci_low, pct), cell(k + ".ci_high", r.ci_high, pct), cell(k + ".method", r.method, function (v) { return v || "\u2013"; })]);
      })),
      note("Prevalence: design-weighted (Hajek) share of eligible sellers selling fakes, weighted for the sampling design and nonresponse; rounds combined weighted by frame size. The raw hit rate (counterfeit / conclusive verdicts) is biased towards risky sellers by design."));

    hbars("c-categories", d.categories.map(function (r) { return { label: r.category, values: [r.hits] }; }), ["hits"], num);
    clear("n-categories").append(table(["category", "orders", "conclusive", "hits", "spent", "cost per hit"], d.categories.map(function (r) {
      var k = "category." + r.category;
      return el("tr", {}, [el("td", {}, [r.category]), cell(k + ".orders", r.orders, num), cell(k + ".conclusive", r.conclusive, num),
        cell(k + ".hits", r.hits, num), cell(k + ".spent", r.spent, money), cell(k + ".cost_per_hit", r.cost_per_hit, money)]);
    })), el("p", { "class": "note" }, ["Programme cost per hit: ", el("span", { "data-k": "cost_per_hit", "data-v": d.cost_per_hit === null ? "" : String(d.cost_per_hit) }, [money(d.cost_per_hit)])]));

    hbars("c-enforcement", d.enforcement.map(function (r) { return { label: r.rule + " \u2192 " + r.action, values: [r.count] }; }), ["count"], num);
    clear("n-enforcement").append(d.enforcement.length ? table(["rule", "action", "count"], d.enforcement.map(function (r) {
      return el("tr", {}, [el("td", {}, [r.rule]), el("td", {}, [r.action]), cell("enforcement." + r.rule + "." + r.action, r.count, num)]);
    })) : note("no enforcement action recommended yet"), note("Enforcement policy version " + d.policy_version + "."));

    refundChart(d);
    var t = d.refund_rate;
    clear("n-refunds").append(t ? table(["month", "orders", "suspect refunds", "rate", "change"], t.months.map(function (r) {
      var k = "refund." + r.period;
      return el("tr", {}, [el("td", {}, [r.period]), cell(k + ".orders", r.orders, num), cell(k + ".suspect_refunds", r.suspect_refunds, num),
        cell(k + ".rate", r.rate, function (v) { return (v * 100).toFixed(4) + "%"; }), cell(k + ".change_pp", r.change_pp, pp)]);
    }).concat([el("tr", {}, [el("td", {}, ["all months"]), el("td"), el("td"), cell("refund.overall", t.overall, function (v) { return (v * 100).toFixed(4) + "%"; }),
      cell("refund.change_pp", t.change_pp, pp)])])) : note("no feed"));

    var o = d.orders, statuses = Object.keys(o.by_status);
    hbars("c-orders", statuses.map(function (s) { return { label: s, values: [o.by_status[s]] }; }), ["orders"], num);
    var lim = o.overdue_rule_seconds;
    clear("n-orders").append(table(["status", "orders"], statuses.map(function (s) {
      return el("tr", {}, [el("td", {}, [s]), cell("status." + s, o.by_status[s], num)]);
    }).concat([el("tr", {}, [el("td", {}, ["total"]), cell("orders.total", o.total, num)]),
      el("tr", {}, [el("td", {}, ["overdue"]), cell("orders.overdue_count", o.overdue_count, num)])])),
      note("Overdue: an open order waiting longer than the programme's timeouts allow: for delivery " + lim.awaiting_delivery +
        " s since the order (jitter + delivery), for a verdict " + lim.awaiting_verdict + " s since delivery, otherwise " + lim.other_open + " s since sampling."),
      o.overdue.length ? table(["order", "round", "seller", "status", "since", "overdue by"], o.overdue.map(function (r) {
        return el("tr", { "data-k": "overdue." + r.order_id }, [el("td", {}, [r.order_id]), el("td", {}, [r.round_id]), el("td", {}, [r.seller_id]),
          el("td", {}, [r.status]), el("td", {}, [when(r.since)]), cell("overdue." + r.order_id + ".seconds", r.overdue_seconds, function (v) { return num(v) + " s"; })]);
      })) : note("No order is overdue."));

    var hours = durations(Math.max.apply(null, d.labs.map(function (r) { return r.p90_hours; }).concat([0])));
    hbars("c-labs", d.labs.map(function (r) { return { label: r.lab_id, values: [r.median_hours, r.p90_hours] }; }), ["median", "90th percentile"], hours);
    clear("n-labs").append(d.labs.length ? table(["lab", "samples", "median", "p90"], d.labs.map(function (r) {
      var k = "lab." + r.lab_id;
      return el("tr", {}, [el("td", {}, [r.lab_id]), cell(k + ".samples", r.samples, num), cell(k + ".median_hours", r.median_hours, hours), cell(k + ".p90_hours", r.p90_hours, hours)]);
    })) : note("no verdict yet"));

    var rc = d.reconciliation;
    clear("n-recon").append(table(["figure", "stored", "recomputed from the journal", "drift"], ["funded", "available", "reserved", "captured", "recovered"].map(function (k) {
      return el("tr", {}, [el("td", {}, [k]), cell("recon.stored." + k, rc.stored[k], money), cell("recon.recomputed." + k, rc.recomputed[k], money), cell("recon.drift." + k, rc.drift[k], money)]);
    })), el("p", {}, ["Journal lines: ", el("span", { "data-k": "recon.journal_entries", "data-v": String(rc.journal_entries) }, [num(rc.journal_entries)]),
      " \u00b7 invariant available + reserved + captured \u2212 recovered = funded: ", el("span", { "class": rc.invariant_holds ? "ok" : "bad" }, [rc.invariant_holds ? "holds" : "BROKEN"]),
      " \u00b7 ", el("span", { "data-k": "recon.reconciled", "data-v": String(rc.reconciled), "class": rc.reconciled ? "ok" : "bad" }, [rc.reconciled ? "reconciled to the minor unit" : "NOT reconciled"])]));
    document.getElementById("main").hidden = false;
    document.body.setAttribute("data-ready", "true");
  }

  // --- where the data comes from: embedded (testbuy report) or the API with the caller's token ---
  function params() {
    var out = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i > 0) { out[decodeURIComponent(kv.slice(0, i))] = decodeURIComponent(kv.slice(i + 1)); }
    });
    return out;
  }
  function status(text) { clear("status").appendChild(document.createTextNode(text)); }

  function load(program, token) {
    var base = location.pathname.replace(/\/dashboard\/?$/, "");
    status("loading\u2026");
    fetch(base + "/programs/" + encodeURIComponent(program) + "/dashboard", { headers: { Authorization: "Bearer " + token }, cache: "no-store" })
      .then(function (r) {
        return r.json().then(function (body) { return { ok: r.ok, status: r.status, body: body }; }, function () { return { ok: false, status: r.status, body: null }; });
      })
      .then(function (res) {
        if (!res.ok) {
          var msg = res.body && res.body.error ? res.body.error.message : "HTTP " + res.status;
          if (res.status === 401) { sessionStorage.removeItem("testbuy.token"); document.getElementById("signin").hidden = false; }
          status("Could not load the dashboard (HTTP " + res.status + "): " + msg);
          return;
        }
        status("");
        render(res.body);
      })
      .catch(function (e) { status("Could not reach the API: " + e); });
  }

  function start() {
    var embedded = JSON.parse(document.getElementById("embedded-data").textContent);
    if (embedded) { EMBEDDED = true; render(embedded); return; }
    var p = params();
    var token = p.token || p.id_token || sessionStorage.getItem("testbuy.token");
    // the hosted UI gives back the state it was sent: the programme typed before signing in
    var program = p.program || p.state || sessionStorage.getItem("testbuy.program");
    if (p.token || p.id_token) {
      sessionStorage.setItem("testbuy.token", token);
      // the token leaves the address bar (and any screenshot or bookmark of it); the programme stays
      history.replaceState(null, "", location.pathname + location.search + (program ? "#program=" + encodeURIComponent(program) : ""));
    }
    var form = document.getElementById("signin");
    var signin = document.body.getAttribute("data-signin");
    if (signin) {  // in AWS: the Cognito hosted UI, which returns here with #id_token=
      var link = el("a", { id: "signin-link", href: signin }, ["Sign in with your testbuy account"]);
      link.addEventListener("click", function () {
        var pr = document.getElementById("f-program").value.trim();
        if (pr) { link.setAttribute("href", signin + "&state=" + encodeURIComponent(pr)); }
      });
      form.insertBefore(el("p", {}, [link, " (then the programme is all the form needs)"]), form.firstChild);
    }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var pr = document.getElementById("f-program").value.trim();
      var tk = document.getElementById("f-token").value.trim() || sessionStorage.getItem("testbuy.token") || "";
      sessionStorage.setItem("testbuy.token", tk);
      sessionStorage.setItem("testbuy.program", pr);
      history.replaceState(null, "", location.pathname + location.search + "#program=" + encodeURIComponent(pr));
      form.hidden = true;
      load(pr, tk);
    });
    if (program) { sessionStorage.setItem("testbuy.program", program); document.getElementById("f-program").value = program; }
    if (token) {  // signed in already (a hosted UI redirect, or earlier in this tab): the programme is all it needs
      var tf = document.getElementById("f-token");
      tf.required = false;
      tf.placeholder = "signed in (leave empty)";
    }
    if (program && token) { load(program, token); } else { form.hidden = false; }
  }
  start();
})();
