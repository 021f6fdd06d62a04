(function(){
"use strict";
var data=JSON.parse(document.getElementById("nf-data").textContent);
var canvas=document.querySelector(".canvas"),panel=document.querySelector(".details-body");
var nodes={},edges=Array.prototype.slice.call(document.querySelectorAll(".group-edge"));
Array.prototype.forEach.call(document.querySelectorAll(".ng-node"),function(n){nodes[n.dataset.ngId]=n;});
var classNode=document.querySelector(".class-node");
function el(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;
 if(text!==undefined&&text!==null)e.textContent=String(text);return e;}
function num(v,d){if(v===null||v===undefined)return "–";var a=Math.abs(v);
 if(a!==0&&(a>=1e4||a<1e-3))return v.toPrecision(3);return v.toFixed(d===undefined?3:d);}
function name(id){return id==="class"?data.names["class"]:(data.names[id]||id);}
function nodeOf(id){return id==="class"?classNode:nodes[id];}
function clearMarks(){canvas.classList.remove("tracing");
 document.querySelectorAll(".on").forEach(function(e){e.classList.remove("on");});}
function trace(id){clearMarks();canvas.classList.add("tracing");var n=nodeOf(id);if(n)n.classList.add("on");
 edges.forEach(function(e){if(e.dataset.child===id||e.dataset.parent===id){e.classList.add("on");
  var o=nodeOf(e.dataset.child===id?e.dataset.parent:e.dataset.child);if(o)o.classList.add("on");}});}
function traceEdge(e){clearMarks();canvas.classList.add("tracing");e.classList.add("on");
 [e.dataset.child,e.dataset.parent].forEach(function(id){var n=nodeOf(id);if(n)n.classList.add("on");});}
var selected=null;
function select(elm){if(selected)selected.classList.remove("selected");selected=elm;
 if(elm)elm.classList.add("selected");}
function link(id){var a=el("span","link",name(id));a.tabIndex=0;
 a.addEventListener("click",function(){showGroup(id,true);});return a;}
function stats(rows){var dl=el("dl","stats");rows.forEach(function(r){dl.appendChild(el("dt",null,r[0]));
 dl.appendChild(el("dd",null,r[1]));});return dl;}
function edgeTable(rows,head){var t=el("table");var tr=el("tr");
 [head,"W","hyperedges"].forEach(function(h){tr.appendChild(el("th",null,h));});t.appendChild(tr);
 rows.forEach(function(r){var row=el("tr");var c=el("td");c.appendChild(link(r[0]));row.appendChild(c);
  row.appendChild(el("td","num",num(r[1])));row.appendChild(el("td","num",r[2]));t.appendChild(row);});
 return t;}
function labelTable(labels){var t=el("table");var tr=el("tr");
 ["concept","score","method","rank"].forEach(function(h){tr.appendChild(el("th",null,h));});t.appendChild(tr);
 labels.forEach(function(l){var row=el("tr");var c=el("td",null,l.concept);
  if(l.details&&Object.keys(l.details).length)c.title=JSON.stringify(l.details);row.appendChild(c);
  row.appendChild(el("td","num",num(l.score)));row.appendChild(el("td",null,l.method));
  row.appendChild(el("td","num",l.rank));t.appendChild(row);});return t;}
function thumbOf(pid){var i=document.querySelector('img.thumb[data-patch-id="'+pid+'"]');return i?i.src:null;}
function exemplars(g){var box=el("div","big-thumbs");g.ex.forEach(function(x){var src=thumbOf(x[0]);
  var f=el("figure","exemplar");f.tabIndex=0;f.dataset.patchId=x[0];var w=el("div","ex-frame");
  if(src){var img=el("img");img.src=src;img.alt="patch "+x[0].slice(0,12);w.appendChild(img);
   if(g.heat[x[0]]){var h=el("img","heat");h.src=g.heat[x[0]];h.alt="where the group fires";w.appendChild(h);}}
  else w.appendChild(el("span","thumb missing","?"));f.appendChild(w);
  f.appendChild(el("figcaption",null,x[1]===null?"–":"act "+num(x[1],2)));
  f.title="activation / the neuron's max activation; click for the full patch and its source image";
  f.addEventListener("click",function(){openPatch(x[0],x[1],g.heat[x[0]]);});
  f.addEventListener("keydown",function(ev){if(ev.key==="Enter")openPatch(x[0],x[1],g.heat[x[0]]);});
  box.appendChild(f);});return box;}
function heatToggle(g){var n=Object.keys(g.heat||{}).length;if(!n)return null;var l=el("label","heat-toggle");
 var c=el("input");c.type="checkbox";c.checked=true;c.addEventListener("change",function(){
  panel.classList.toggle("no-heat",!c.checked);});panel.classList.remove("no-heat");l.appendChild(c);
 l.appendChild(document.createTextNode(" where it fires (metric M of its core neurons per position)"));return l;}
function showGroup(id,scroll){if(id==="class"){showClass();return;}var g=data.groups[id];if(!g)return;
 select(nodes[id]);trace(id);
 if(scroll&&nodes[id])nodes[id].scrollIntoView({block:"nearest",inline:"center",behavior:"smooth"});
 panel.textContent="";panel.scrollTop=0;panel.appendChild(el("h2",null,name(id)));
 panel.appendChild(el("div","id",id));
 panel.appendChild(stats([["layer",g.layer],["neurons",g.members.length+" ("+g.core.length+" core)"],
  ["semantic groups",g.sgs],["patches",g.patches]]));
 panel.appendChild(el("h4",null,"Feeds (layer above)"));
 if(g.out.length)panel.appendChild(edgeTable(g.out,"parent"));
 else panel.appendChild(el("p","small","nothing"));
 panel.appendChild(el("h4",null,"Fed by (layer below)"));
 if(g["in"].length)panel.appendChild(edgeTable(g["in"],"child"));
 else panel.appendChild(el("p","small","nothing (lowest layer)"));
 if(g.ex.length){panel.appendChild(el("h4",null,"Exemplars (best first)"));var ht=heatToggle(g);
  if(ht)panel.appendChild(ht);panel.appendChild(exemplars(g));}
 panel.appendChild(el("h4",null,"Labels"));
 if(g.labels.length)panel.appendChild(labelTable(g.labels));
 else panel.appendChild(el("p","small","no label"));
 if(g.truth){panel.appendChild(el("h4",null,"Ground truth"));
  var s=Object.keys(g.truth.shares||{}).map(function(k){return k+" "+num(g.truth.shares[k],2);}).join(", ");
  panel.appendChild(el("p",null,(g.truth.concept||"–")+" (purity "+num(g.truth.purity,2)+")"));
  if(s)panel.appendChild(el("p","small","share of patches containing each concept: "+s));}
 panel.appendChild(el("h4",null,"Member neurons ("+g.members.length+", core in yellow)"));
 var m=el("div","members");g.members.forEach(function(n){
  m.appendChild(el("span",g.core.indexOf(n)>=0?"member core":"member",n));});panel.appendChild(m);
 if(g.sgLabels.length){var d=el("details","sg-labels");
  d.appendChild(el("summary",null,"Labels of its semantic groups ("+g.sgLabels.length+")"));
  var t=el("table");g.sgLabels.forEach(function(r){var row=el("tr");row.appendChild(el("td",null,r[0]));
   row.appendChild(el("td",null,r[1]));row.appendChild(el("td","num",num(r[2])));
   row.appendChild(el("td",null,r[3]));t.appendChild(row);});d.appendChild(t);panel.appendChild(d);}}
var lightbox=document.querySelector(".lightbox");
function closePatch(){lightbox.hidden=true;lightbox.querySelector(".lb-body").textContent="";}
function openPatch(pid,score,heat){var body=lightbox.querySelector(".lb-body");body.textContent="";
 var p=data.patches[pid]||{};var src=thumbOf(pid);
 var a=el("figure","lb-patch");if(src){var img=el("img");img.src=src;img.alt="patch";a.appendChild(img);}
 else a.appendChild(el("p","small","no image for this patch"));
 a.appendChild(el("figcaption",null,"patch "+pid.slice(0,16)+(score===null||score===undefined?"":
  " · activation "+num(score,3)+" of the neuron's max")));body.appendChild(a);
 if(src&&heat){var hf=el("figure","lb-patch lb-heat");var fr=el("div","ex-frame");var b1=el("img");b1.src=src;
  var b2=el("img","heat");b2.src=heat;fr.appendChild(b1);fr.appendChild(b2);hf.appendChild(fr);
  hf.appendChild(el("figcaption",null,"where the group fires (M per position, red = high)"));body.appendChild(hf);}
 var b=el("figure","lb-source");var uri=p.source?data.sources[p.source]:null;
 if(uri){var wrap=el("div","lb-frame");var simg=el("img");simg.alt="source image";wrap.appendChild(simg);
  var crop=el("div","lb-crop");wrap.appendChild(crop);
  simg.addEventListener("load",function(){var W=simg.naturalWidth,H=simg.naturalHeight,bx=p.box||[0,0,0,0];
   var sw=data.sourceSizes[p.source];var iw=sw?sw[0]:W,ih=sw?sw[1]:H;
   crop.style.left=(100*bx[0]/iw)+"%";crop.style.top=(100*bx[1]/ih)+"%";
   crop.style.width=(100*(bx[2]-bx[0])/iw)+"%";crop.style.height=(100*(bx[3]-bx[1])/ih)+"%";});
  simg.src=uri;b.appendChild(wrap);}
 else b.appendChild(el("p","small","source image not included (pass --images DIR to `neurflow report`)"));
 b.appendChild(el("figcaption",null,(p.source||"?")+(p.box?" · crop "+p.box.join(", "):"")));
 body.appendChild(b);lightbox.hidden=false;lightbox.querySelector(".lb-close").focus();}
lightbox.addEventListener("click",function(ev){if(ev.target===lightbox||ev.target.classList.contains("lb-close"))
 closePatch();});
function showClass(){select(classNode);trace("class");panel.textContent="";
 panel.appendChild(el("h2",null,data.className));
 panel.appendChild(stats([["class index",data.classIndex],["groups feeding it",data.classIn.length]]));
 panel.appendChild(el("p","small","W of a group into the class is the share of the output neuron's concept "+
  "patches the group covers."));
 panel.appendChild(edgeTable(data.classIn,"group"));}
function showEdge(e){select(e);traceEdge(e);var c=e.dataset.child,p=e.dataset.parent;
 var w=parseFloat(e.dataset.weight);panel.textContent="";panel.appendChild(el("h2",null,"Edge"));
 var h=el("p");h.appendChild(link(c));h.appendChild(document.createTextNode(" → "));h.appendChild(link(p));
 panel.appendChild(h);var rows=[["W",num(w,4)]];
 var into=p==="class"?data.classIn:(data.groups[p]||{})["in"]||[];
 var total=into.reduce(function(a,r){return a+Math.abs(r[1]);},0);
 var rec=into.filter(function(r){return r[0]===c;})[0];
 if(rec)rows.push(["hyperedges summed",rec[2]]);
 if(total>0)rows.push(["share of the parent's incoming |W|",(100*Math.abs(w)/total).toFixed(1)+"%"]);
 var from=(data.groups[c]||{}).out||[];var tout=from.reduce(function(a,r){return a+Math.abs(r[1]);},0);
 if(tout>0)rows.push(["share of the child's outgoing |W|",(100*Math.abs(w)/tout).toFixed(1)+"%"]);
 panel.appendChild(stats(rows));
 panel.appendChild(el("p","small",p==="class"?"W: share of the output neuron's concept covered by the group.":
  "W(child, parent): the sum of the hyperedge weights w(child member, parent semantic group) that join "+
  "the two groups (paper Sec. 3.5)."));
 [[c,"Child"],[p,"Parent"]].forEach(function(x){var g=data.groups[x[0]];if(!g)return;
  panel.appendChild(el("h4",null,x[1]+": "+name(x[0])));
  if(g.labels.length)panel.appendChild(el("p",null,g.labels.slice(0,3).map(function(l){
   return l.concept+" "+num(l.score,2);}).join(", ")));
  var m=el("div","members");g.members.forEach(function(n){
   m.appendChild(el("span",g.core.indexOf(n)>=0?"member core":"member",n));});panel.appendChild(m);});}
Object.keys(nodes).forEach(function(id){var n=nodes[id];
 n.addEventListener("mouseenter",function(){trace(id);});
 n.addEventListener("mouseleave",function(){restore();});
 n.addEventListener("click",function(){showGroup(id,false);});
 n.addEventListener("keydown",function(ev){if(ev.key==="Enter"||ev.key===" "){ev.preventDefault();
  showGroup(id,false);}});});
if(classNode){classNode.addEventListener("click",showClass);
 classNode.addEventListener("mouseenter",function(){trace("class");});
 classNode.addEventListener("mouseleave",function(){restore();});}
edges.forEach(function(e){e.addEventListener("mouseenter",function(){traceEdge(e);});
 e.addEventListener("mouseleave",function(){restore();});
 e.addEventListener("click",function(){showEdge(e);});
 e.addEventListener("keydown",function(ev){if(ev.key==="Enter"){showEdge(e);}});});
function restore(){if(!selected){clearMarks();return;}
 if(selected.classList.contains("group-edge"))traceEdge(selected);
 else if(selected===classNode)trace("class");else trace(selected.dataset.ngId);}
var zoom=1,stage=document.querySelector(".stage"),label=document.querySelector(".zoom-value");
function setZoom(z){zoom=Math.max(0.05,Math.min(2,z));stage.style.zoom=zoom;
 label.textContent=Math.round(zoom*100)+"%";}
document.querySelectorAll(".toolbar button").forEach(function(b){b.addEventListener("click",function(){
 var s=parseInt(b.dataset.zoom,10);if(s===0){var sc=document.querySelector(".scroll");
  setZoom(Math.min(sc.clientWidth/stage.scrollWidth,sc.clientHeight/stage.scrollHeight)*zoom);
  sc.scrollLeft=0;sc.scrollTop=0;}else setZoom(zoom*(s>0?1.2:1/1.2));});});
document.addEventListener("keydown",function(ev){if(ev.key==="Escape"){if(!lightbox.hidden){closePatch();return;}
 select(null);clearMarks();}});
var tip=document.querySelector(".edge-tip");
edges.forEach(function(e){e.addEventListener("mousemove",function(ev){
  tip.textContent="W = "+num(parseFloat(e.dataset.weight),4);tip.hidden=false;
  tip.style.left=(ev.clientX+14)+"px";tip.style.top=(ev.clientY+12)+"px";});
 e.addEventListener("mouseleave",function(){tip.hidden=true;});});
var sc=document.querySelector(".scroll");if(sc.scrollWidth>sc.clientWidth){
 sc.scrollLeft=(sc.scrollWidth-sc.clientWidth)/2;}
var m=/^#group=(.+)$/.exec(window.location.hash);
if(m){var id=decodeURIComponent(m[1]);if(data.groups[id]||id==="class")showGroup(id,true);}
document.documentElement.dataset.ready="1";
})();
