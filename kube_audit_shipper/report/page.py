"""The HTML document around the sections: head, styles, the little script, and a strict content policy.

One file, nothing fetched: styles and script are inline, charts are inline SVG, no font, image or URL is
referenced. The Content-Security-Policy says so to the browser too (`default-src 'none'`; the one script
allowed by its SHA-256, never by 'unsafe-inline'), so even a string that escaped escaping could neither run
nor fetch anything. Without script every section is shown one after the other; with it, tabs and sortable
tables.
"""

from __future__ import annotations

import base64
import hashlib

from kube_audit_shipper.report.markup import esc

TABS = (("overview", "Overview"), ("resources", "Resource operations"), ("who", "Who"), ("cost", "Cost and policy"))

STYLE = """
:root{--fg:#1f2430;--muted:#5f6673;--line:#dfe3ea;--bg:#f6f7f9;--card:#fff;--accent:#3b6fb6;--bad:#c8423b}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:14px 24px 6px;background:#fff;border-bottom:1px solid var(--line)}
header h1{margin:0;font-size:20px}
header .meta{color:var(--muted);font-size:12.5px;margin-top:2px}
nav{display:flex;gap:4px;padding:0 24px;background:#fff;border-bottom:1px solid var(--line);position:sticky;top:0;z-index:2}
nav a{padding:9px 14px;color:var(--muted);text-decoration:none;border-bottom:2px solid transparent;font-weight:600}
nav a.active{color:var(--accent);border-bottom-color:var(--accent)}
main{padding:16px 24px 32px;max-width:1500px;margin:0 auto}
section.tab>h2{font-size:17px;margin:8px 0 12px}
.js section.tab{display:none}.js section.tab.active{display:block}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:14px}
.panel{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:12px 14px;min-width:0}
.panel.wide{grid-column:1/-1}
.panel h3{margin:0 0 8px;font-size:14.5px}
.note{color:var(--muted);font-size:12.5px;margin:-4px 0 8px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:10px;margin-bottom:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 12px}
.card .label{color:var(--muted);font-size:12px}
.card .value{font-size:21px;font-weight:650}
.card .sub{color:var(--muted);font-size:11.5px}
.card.alert .value{color:var(--bad)}
.scroll{overflow:auto;max-height:460px}
table{border-collapse:collapse;width:100%;font-size:12.8px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{position:sticky;top:0;background:#f0f2f5;cursor:pointer;white-space:nowrap;user-select:none}
th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.time{white-space:nowrap;font-variant-numeric:tabular-nums}
td.code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
td.bad,span.bad{color:var(--bad);font-weight:600}
tr.flag td{background:#fdecea}
.empty{color:var(--muted);font-style:italic}
svg.chart{display:block;max-width:100%;height:auto}
svg .axis{font-size:10.5px;fill:#6b717c}svg .lbl{font-size:11.5px;fill:#1f2430}svg .val{font-size:11px;fill:#5f6673}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;color:var(--muted);margin-top:4px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
details{border-top:1px solid var(--line);padding:6px 0}
details summary{cursor:pointer;font-weight:600}
details .grid{margin-top:8px}
.tag{display:inline-block;padding:0 6px;border-radius:9px;font-size:11.5px;background:#eef1f5}
.tag.risky,.tag.critical,.tag.high{background:#fbe0de;color:#8e231d}
.tag.medium{background:#fcefd9;color:#7a4b05}
footer{color:var(--muted);font-size:12px;padding:0 24px 24px}
"""

SCRIPT = """
(function(){
  var root=document.documentElement;root.classList.add('js');
  var links=document.querySelectorAll('nav a'),tabs=document.querySelectorAll('section.tab');
  function show(id){
    var found=false;
    tabs.forEach(function(t){var on=t.id===id;t.classList.toggle('active',on);found=found||on;});
    if(!found&&tabs.length){tabs[0].classList.add('active');id=tabs[0].id;}
    links.forEach(function(a){a.classList.toggle('active',a.getAttribute('href')==='#'+id);});
  }
  links.forEach(function(a){a.addEventListener('click',function(e){e.preventDefault();var id=a.getAttribute('href').slice(1);
    if(history.replaceState){history.replaceState(null,'','#'+id);}show(id);});});
  show(location.hash.slice(1));
  function key(td){var s=td.getAttribute('data-sort');if(s!==null&&s!==''&&!isNaN(+s)){return +s;}return (s!==null?s:td.textContent).toLowerCase();}
  document.querySelectorAll('table.sortable').forEach(function(table){
    table.querySelectorAll('th').forEach(function(th,col){
      function sort(){
        var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows),asc=!th.classList.contains('asc');
        table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
        th.classList.add(asc?'asc':'desc');
        rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
          if(typeof x!==typeof y){x=String(x);y=String(y);}return (x<y?-1:x>y?1:0)*(asc?1:-1);});
        rows.forEach(function(r){body.appendChild(r);});
      }
      th.addEventListener('click',sort);
      th.addEventListener('keydown',function(e){if(e.key==='Enter'){sort();}});
    });
  });
})();
"""


def script_hash() -> str:
    """The CSP source that allows exactly the inline script above."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode() + "'"


def document(title: str, meta: str, sections: list[tuple[str, str]], footer: str) -> str:
    """The whole page; `sections` are (tab id, section HTML), in TABS order."""
    csp = f"default-src 'none'; style-src 'unsafe-inline'; script-src {script_hash()}; img-src data:; base-uri 'none'; form-action 'none'"
    nav = "".join(f'<a href="#{ident}">{esc(name)}</a>' for ident, name in TABS)
    body = "".join(html for _, html in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
        f'<body><header><h1>{esc(title)}</h1><div class="meta">{meta}</div></header>'
        f"<nav>{nav}</nav><main>{body}</main><footer>{footer}</footer>"
        f"<script>{SCRIPT}</script></body></html>\n"
    )
