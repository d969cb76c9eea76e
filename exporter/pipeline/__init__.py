"""A target's way from what its source read to what /metrics serves, one module per stage in the
order data flows, and `target.Pipeline`, which runs them for one target:

    body --parse (exporter.format)--> families --family_filter--> --unify--> --conform-->
         --normalize--> --relabel--> --exposition (rendered)--> served families

`skeleton` and `template` are the fast way for a poll shaped like the last one.
"""
