"""The /overview page: one table of backends and one of GPUs, rendered here and again by a small inline
script from each message of the stream, so that it updates live and still works with scripts off.

Nothing is loaded from elsewhere (an air-gapped host). Every value from an upstream (a model name is
one) goes through html.escape here and through textContent in the script, never through innerHTML;
the Content-Security-Policy allows only this page's own script, by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any
from urllib.parse import quote

#: Seconds between reloads when the script cannot run (inside <noscript>).
NOSCRIPT_REFRESH = 5

STYLE = """
body{font:13px/1.35 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2937;color:#fff;padding:10px 20px}header a{color:#cbd5e1;margin-left:16px}
header strong a{color:#fff;margin:0;text-decoration:none}main{padding:12px 20px}
h1{font-size:20px;margin:4px 0 8px}h2{font-size:16px;margin:20px 0 6px}
table{border-collapse:collapse;background:#fff;width:100%}th,td{border:1px solid #e2e2e2;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f1f1f1;font-weight:600;font-size:12px}td.num{text-align:right;white-space:nowrap}
.badge{display:inline-block;border-radius:4px;padding:1px 6px;font-weight:700;font-size:11px;color:#fff}
.h-healthy{background:#15803d}.h-degraded{background:#b45309}.h-unhealthy{background:#b91c1c}.h-unknown{background:#6b7280}
.s-up{color:#15803d}.s-down{color:#b91c1c;font-weight:700}.s-pending{color:#6b7280}
.lvl-degraded{color:#b45309;font-weight:700}.lvl-unhealthy{color:#b91c1c;font-weight:700}
.muted{color:#6b7280}.small{font-size:11px}svg.spark{display:block;margin-top:2px}svg.spark polyline{fill:none;stroke:#2563eb;stroke-width:1.2}
nav.windows a{margin-right:10px}nav.windows a.on{font-weight:700;color:#222;text-decoration:none}
#live.on{color:#15803d}#live.off{color:#b45309}p.summary{margin:4px 0 8px}
"""

SCRIPT = r"""
(function(){
var body=document.body,live=document.getElementById('live');
if(!window.EventSource){return;}
var es=new EventSource('api/overview/stream?window='+encodeURIComponent(body.getAttribute('data-window')));
es.onmessage=function(e){var r;try{r=JSON.parse(e.data);}catch(x){return;}render(r);
live.textContent='live';live.className='on';};
es.onerror=function(){live.textContent='reconnecting';live.className='off';};
function el(tag,cls,text){var n=document.createElement(tag);if(cls){n.className=cls;}if(text!=null){n.textContent=text;}return n;}
function num(v,d){return v==null?'–':(Math.abs(v)>=100?v.toFixed(0):v.toPrecision(d||3).replace(/\.?0+$/,''));}
function rate(v){return v==null?'–':num(v)+'/s';}
function pct(v){return v==null?'–':(v*100).toFixed(1)+'%';}
function secs(v){return v==null?'–':(v<1?num(v*1000)+' ms':num(v)+' s');}
function bytes(v){return v==null?'–':(v/1073741824).toFixed(1)+' GiB';}
function spark(values){var ns='http://www.w3.org/2000/svg',s=document.createElementNS(ns,'svg');
s.setAttribute('class','spark');s.setAttribute('width','80');s.setAttribute('height','18');s.setAttribute('viewBox','0 0 80 18');
var xs=[],max=0,i;for(i=0;i<values.length;i++){if(values[i]!=null&&values[i]>max){max=values[i];}}
var line=[];function flush(){if(line.length>1){var p=document.createElementNS(ns,'polyline');p.setAttribute('points',line.join(' '));s.appendChild(p);}line=[];}
for(i=0;i<values.length;i++){if(values[i]==null){flush();continue;}
var x=values.length>1?i*80/(values.length-1):0,y=17-(max>0?values[i]/max*16:0);line.push(x.toFixed(1)+','+y.toFixed(1));}
flush();return s;}
function cell(tr,text,cls,sp){var td=el('td',cls);td.appendChild(document.createTextNode(text));if(sp){td.appendChild(spark(sp));}tr.appendChild(td);return td;}
function lvl(td,level,text){var s=el('span','lvl-'+level,text);td.appendChild(s);}
function judged(tr,v,deg,unh,show){var td=cell(tr,'',"num");var level=v==null?'':(v>=unh?'unhealthy':(v>=deg&&v>0?'degraded':''));
if(level){lvl(td,level,show(v)+' · '+level);}else{td.textContent=show(v);}}
function qs(q){return secs(q.p50)+' / '+secs(q.p90)+' / '+secs(q.p99);}
function render(r){
var t=r.thresholds,rows=document.createDocumentFragment();
r.backends.forEach(function(b){var tr=el('tr');tr.setAttribute('data-target',b.target);tr.setAttribute('data-model',b.model==null?'':b.model);
tr.setAttribute('data-state',b.state);tr.setAttribute('data-health',b.health);
var td=el('td');td.appendChild(el('strong',null,b.target));td.appendChild(el('br'));td.appendChild(el('span','muted',(b.model==null?'(no model)':b.model)+(b.backend?' · '+b.backend:'')));tr.appendChild(td);
td=el('td');td.appendChild(el('span','badge h-'+b.health,b.health.toUpperCase()));td.appendChild(el('br'));td.appendChild(el('span','s-'+b.state,b.state));tr.appendChild(td);
var h=b.history;cell(tr,num(b.requests_running),'num',h.requests_running);
var w=cell(tr,'','num');if(t.waiting_degraded&&b.requests_waiting!=null&&b.requests_waiting>=t.waiting_degraded){lvl(w,'degraded',num(b.requests_waiting)+' · degraded');}else{w.textContent=num(b.requests_waiting);}
var kv=cell(tr,'','num');if(b.kv_cache_usage_ratio!=null&&b.kv_cache_usage_ratio>=t.kv_cache_degraded){lvl(kv,'degraded',pct(b.kv_cache_usage_ratio)+' · degraded');}else{kv.textContent=pct(b.kv_cache_usage_ratio);}kv.appendChild(spark(h.kv_cache_usage_ratio));
cell(tr,rate(b.request_rate),'num',h.request_rate);
cell(tr,rate(b.success_rate)+' / '+rate(b.abort_rate)+' / '+rate(b.error_rate),'num');
judged(tr,b.error_ratio,t.error_ratio_degraded,t.error_ratio_unhealthy,pct);
judged(tr,b.abort_ratio,t.abort_ratio_degraded,t.abort_ratio_unhealthy,pct);
cell(tr,qs(b.ttft_seconds),'num');cell(tr,qs(b.inter_token_latency_seconds),'num');cell(tr,qs(b.e2e_latency_seconds),'num');
cell(tr,rate(b.prompt_tokens_per_second),'num');cell(tr,rate(b.generation_tokens_per_second),'num',h.generation_tokens_per_second);
cell(tr,b.reasons.join('; '),'small');rows.appendChild(tr);});
var g=document.createDocumentFragment();
r.gpus.forEach(function(x){var tr=el('tr');tr.setAttribute('data-target',x.target);tr.setAttribute('data-gpu',x.gpu==null?'':x.gpu);
cell(tr,x.target);cell(tr,x.gpu==null?'–':x.gpu);cell(tr,x.uuid,'small');var s=cell(tr,'');s.appendChild(el('span','s-'+x.state,x.state));
cell(tr,pct(x.utilization_ratio),'num',x.history.utilization_ratio);
cell(tr,bytes(x.memory_used_bytes)+' / '+bytes(x.memory_total_bytes)+' ('+pct(x.memory_used_ratio)+')','num');
cell(tr,x.power_watts==null?'–':num(x.power_watts)+' W','num',x.history.power_watts);g.appendChild(tr);});
if(!r.gpus.length){var e=el('tr'),c=el('td','muted',EMPTY_GPUS);c.setAttribute('colspan','7');e.appendChild(c);g.appendChild(e);}
if(!r.backends.length){var e2=el('tr'),c2=el('td','muted',EMPTY_BACKENDS);c2.setAttribute('colspan','15');e2.appendChild(c2);rows.appendChild(e2);}
var tb=document.getElementById('backend-rows');tb.textContent='';tb.appendChild(rows);
var gb=document.getElementById('gpu-rows');gb.textContent='';gb.appendChild(g);
var s=r.summary;document.getElementById('summary').textContent=s.backends+' backends: '+s.healthy+' healthy, '+s.degraded+' degraded, '+s.unhealthy+' unhealthy, '+s.unknown+' unknown · '+s.gpus+' GPUs';
var u=document.getElementById('updated');u.textContent=r.generated;u.setAttribute('data-generated',r.generated_unix);
body.setAttribute('data-updates',String(Number(body.getAttribute('data-updates')||'0')+1));}
})();
"""

EMPTY_GPUS = "no GPUs: add a target of type nvml to see this host's GPUs here"
EMPTY_BACKENDS = "no backends configured"
SCRIPT = SCRIPT.replace("EMPTY_GPUS", json.dumps(EMPTY_GPUS)).replace("EMPTY_BACKENDS", json.dumps(EMPTY_BACKENDS))
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
#: Only this page's own script and styles; data only from this server; no frames, no forms, no plugins.
CSP = (
    f"default-src 'none'; script-src '{SCRIPT_HASH}'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

BACKEND_HEADINGS = (
    "target / model",
    "health",
    "running",
    "waiting",
    "KV cache",
    "requests",
    "success / abort / error",
    "error ratio",
    "abort ratio",
    "TTFT p50 / p90 / p99",
    "inter-token p50 / p90 / p99",
    "end-to-end p50 / p90 / p99",
    "prompt tokens",
    "generated tokens",
    "why",
)
GPU_HEADINGS = ("target", "GPU", "UUID", "state", "utilisation", "memory used", "power")


def render(report: dict[str, Any]) -> str:
    """The whole page as the report says it now."""
    window = report["window_seconds"]
    t = report["thresholds"]
    choices = " ".join(
        f'<a href="?window={quote(_span(w))}"{" class=on" if w == window else ""}>{_e(_span(w))}</a>'
        for w in report["windows_seconds"]
    )
    legend = (
        f"error ratio degraded at {_pct(t['error_ratio_degraded'])}, unhealthy at {_pct(t['error_ratio_unhealthy'])}; "
        f"abort ratio degraded at {_pct(t['abort_ratio_degraded'])}, unhealthy at {_pct(t['abort_ratio_unhealthy'])}; "
        f"KV cache degraded at {_pct(t['kv_cache_degraded'])}"
        + (f"; degraded from {t['waiting_degraded']} requests waiting" if t["waiting_degraded"] else "")
        + "; a target down is unhealthy"
    )
    backends = "".join(_backend_row(row, t) for row in report["backends"]) or _empty(EMPTY_BACKENDS, 15)
    gpus = "".join(_gpu_row(row) for row in report["gpus"]) or _empty(EMPTY_GPUS, 7)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<noscript><meta http-equiv="refresh" content="{NOSCRIPT_REFRESH}"></noscript>
<title>Overview - inference-exporter</title><style>{STYLE}</style></head>
<body data-window="{_e(_span(window))}" data-updates="0"><header><strong><a href="/">inference-exporter</a></strong>
<a href="/overview">Overview</a><a href="/targets">Targets</a><a href="/metrics">Metrics</a><a href="/api/overview">JSON</a><a href="/api/overview.csv">CSV</a></header>
<main><h1>Overview <span class="muted small">over the last {_e(_span(window))}</span></h1>
<nav class="windows">Window: {choices}</nav>
<p class="summary"><strong id="summary">{_e(_summary(report["summary"]))}</strong>
· updated <span id="updated" data-generated="{report["generated_unix"]}">{_e(report["generated"])}</span>
· <span id="live" class="off">refreshes every {NOSCRIPT_REFRESH}s</span></p>
<p class="muted small">Rates and percentiles over the window, from the polls the exporter makes anyway; running, waiting,
KV cache and GPUs as of the last poll. Thresholds: {_e(legend)}.</p>
<h2>Backends</h2>
<table id="backends"><thead><tr>{"".join(f"<th>{_e(h)}</th>" for h in BACKEND_HEADINGS)}</tr></thead>
<tbody id="backend-rows">{backends}</tbody></table>
<h2>GPUs</h2>
<table id="gpus"><thead><tr>{"".join(f"<th>{_e(h)}</th>" for h in GPU_HEADINGS)}</tr></thead>
<tbody id="gpu-rows">{gpus}</tbody></table>
</main><script>{SCRIPT}</script></body></html>
"""


def _empty(text: str, columns: int) -> str:
    return f'<tr><td class="muted" colspan="{columns}">{_e(text)}</td></tr>'


def _summary(summary: dict[str, int]) -> str:
    return (
        f"{summary['backends']} backends: {summary['healthy']} healthy, {summary['degraded']} degraded, "
        f"{summary['unhealthy']} unhealthy, {summary['unknown']} unknown · {summary['gpus']} GPUs"
    )


def _backend_row(b: dict[str, Any], t: dict[str, Any]) -> str:
    h = b["history"]
    model = "(no model)" if b["model"] is None else b["model"]
    who = f'<strong>{_e(b["target"])}</strong><br><span class="muted">{_e(model)}{_e(" · " + b["backend"]) if b["backend"] else ""}</span>'
    health = f'<span class="badge h-{_e(b["health"])}">{_e(b["health"].upper())}</span><br><span class="s-{_e(b["state"])}">{_e(b["state"])}</span>'
    waiting = b["requests_waiting"]
    waiting_cell = (
        _level("degraded", f"{_num(waiting)} · degraded")
        if t["waiting_degraded"] and waiting is not None and waiting >= t["waiting_degraded"]
        else _e(_num(waiting))
    )
    kv = b["kv_cache_usage_ratio"]
    kv_cell = (
        _level("degraded", f"{_pct(kv)} · degraded")
        if kv is not None and kv >= t["kv_cache_degraded"]
        else _e(_pct(kv))
    )
    cells = [
        ("", who),
        ("", health),
        ("num", _e(_num(b["requests_running"])) + spark(h["requests_running"])),
        ("num", waiting_cell),
        ("num", kv_cell + spark(h["kv_cache_usage_ratio"])),
        ("num", _e(_rate(b["request_rate"])) + spark(h["request_rate"])),
        ("num", _e(f"{_rate(b['success_rate'])} / {_rate(b['abort_rate'])} / {_rate(b['error_rate'])}")),
        ("num", _judged(b["error_ratio"], t["error_ratio_degraded"], t["error_ratio_unhealthy"])),
        ("num", _judged(b["abort_ratio"], t["abort_ratio_degraded"], t["abort_ratio_unhealthy"])),
        ("num", _e(_quantiles(b["ttft_seconds"]))),
        ("num", _e(_quantiles(b["inter_token_latency_seconds"]))),
        ("num", _e(_quantiles(b["e2e_latency_seconds"]))),
        ("num", _e(_rate(b["prompt_tokens_per_second"]))),
        ("num", _e(_rate(b["generation_tokens_per_second"])) + spark(h["generation_tokens_per_second"])),
        ("small", _e("; ".join(b["reasons"]))),
    ]
    tds = "".join(f'<td class="{css}">{cell}</td>' if css else f"<td>{cell}</td>" for css, cell in cells)
    model_attr = "" if b["model"] is None else b["model"]
    return (
        f'<tr data-target="{_e(b["target"])}" data-model="{_e(model_attr)}" data-state="{_e(b["state"])}" '
        f'data-health="{_e(b["health"])}">{tds}</tr>\n'
    )


def _gpu_row(g: dict[str, Any]) -> str:
    h = g["history"]
    power = "–" if g["power_watts"] is None else f"{_num(g['power_watts'])} W"
    cells = [
        ("", _e(g["target"])),
        ("", _e("–" if g["gpu"] is None else g["gpu"])),
        ("small", _e(g["uuid"])),
        ("", f'<span class="s-{_e(g["state"])}">{_e(g["state"])}</span>'),
        ("num", _e(_pct(g["utilization_ratio"])) + spark(h["utilization_ratio"])),
        (
            "num",
            _e(
                f"{_bytes(g['memory_used_bytes'])} / {_bytes(g['memory_total_bytes'])} ({_pct(g['memory_used_ratio'])})"
            ),
        ),
        ("num", _e(power) + spark(h["power_watts"])),
    ]
    tds = "".join(f'<td class="{css}">{cell}</td>' if css else f"<td>{cell}</td>" for css, cell in cells)
    return f'<tr data-target="{_e(g["target"])}" data-gpu="{_e(g["gpu"] or "")}">{tds}</tr>\n'


def spark(values: list[float | None]) -> str:
    """An 80x18 inline SVG line of the values, scaled to their maximum, broken where a value is missing."""
    finite = [v for v in values if v is not None]
    top = max(finite, default=0.0)
    lines: list[list[str]] = []
    line: list[str] = []
    for index, value in enumerate(values):
        if value is None:
            lines.append(line)
            line = []
            continue
        x = index * 80 / (len(values) - 1) if len(values) > 1 else 0.0
        y = 17 - (value / top * 16 if top > 0 else 0.0)
        line.append(f"{x:.1f},{y:.1f}")
    lines.append(line)
    polylines = "".join(f'<polyline points="{" ".join(points)}"></polyline>' for points in lines if len(points) > 1)
    return f'<svg class="spark" width="80" height="18" viewBox="0 0 80 18">{polylines}</svg>'


def _judged(value: float | None, degraded: float, unhealthy: float) -> str:
    if value is None:
        return _e(_pct(value))
    if value >= unhealthy:
        return _level("unhealthy", f"{_pct(value)} · unhealthy")
    if value >= degraded and value > 0:
        return _level("degraded", f"{_pct(value)} · degraded")
    return _e(_pct(value))


def _level(level: str, text: str) -> str:
    return f'<span class="lvl-{level}">{_e(text)}</span>'


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


# The same formatting as the script's (num, rate, pct, secs, bytes), so that the page reads the same
# before and after its first live update.


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:.0f}"
    text = f"{value:.{digits}g}" if value != 0 else "0"
    if "e" in text:
        text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{_num(value)}/s"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _secs(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{_num(value * 1000)} ms" if value < 1 else f"{_num(value)} s"


def _bytes(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**30:.1f} GiB"


def _quantiles(q: dict[str, float | None]) -> str:
    return f"{_secs(q['p50'])} / {_secs(q['p90'])} / {_secs(q['p99'])}"


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
