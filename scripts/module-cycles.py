import os,re,sys,itertools
root='/work/main/src'
mods={}
for dirpath,_,files in os.walk(root):
    for f in files:
        if not f.endswith('.rs') or f == 'tests.rs': continue
        p=os.path.join(dirpath,f)
        rel=os.path.relpath(p,root)
        top=rel.split(os.sep)[0].replace('.rs','')
        if top=='lib': continue
        text=open(p).read()
        # strip test modules roughly: ignore lines after '#[cfg(test)]\nmod tests'
        m=re.search(r'#\[cfg\(test\)\]\s*mod tests', text)
        if m: text=text[:m.start()]
        # strip comments
        text=re.sub(r'//[^\n]*','',text)
        deps=set(re.findall(r'crate::([a-z_]+)',text))
        # `use super::` in top-level file of a folder means within module
        mods.setdefault(top,set()).update(d for d in deps if d!=top)
known=set(mods)
for k in mods: mods[k]&=known|set()
edges={(a,b) for a in mods for b in mods[a] if b in mods}
cyc=[(a,b) for (a,b) in edges if (b,a) in edges and a<b]
print("two-module cycles:",cyc)
# longer cycles via SCC
import collections
index={};low={};stack=[];on=set();sccs=[];i=[0]
def strong(v):
    index[v]=low[v]=i[0];i[0]+=1;stack.append(v);on.add(v)
    for w in mods.get(v,()):
        if w not in mods: continue
        if w not in index: strong(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],index[w])
    if low[v]==index[v]:
        c=[]
        while True:
            w=stack.pop();on.discard(w);c.append(w)
            if w==v: break
        if len(c)>1: sccs.append(sorted(c))
sys.setrecursionlimit(10000)
for v in mods:
    if v not in index: strong(v)
print("strongly connected groups:",sccs)
if '-v' in sys.argv:
    for a in sorted(mods): print(a,'->',sorted(mods[a]))
