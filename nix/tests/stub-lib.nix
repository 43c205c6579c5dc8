# A minimal stand-in for nixpkgs' `lib`, enough to evaluate devbox's modules without nixpkgs
# (which cannot be downloaded where the tests run). Options become plain attribute sets;
# mkIf/mkMerge/mkDefault apply at once. It checks shape and values, not the module system.
let
  type = name: extra: { _type = "type"; inherit name; } // extra;
  recursiveMerge = a: b:
    a // builtins.mapAttrs
      (n: v: if builtins.isAttrs v && builtins.isAttrs (a.${n} or null) && !(v ? _type) then recursiveMerge a.${n} v
             else if builtins.isList v && builtins.isList (a.${n} or null) then a.${n} ++ v
             else v)
      b;
in
rec {
  mkOption = args: { _type = "option"; } // args;
  mkEnableOption = what: mkOption { type = types.bool; default = false; description = "Whether to enable ${what}."; };
  mkIf = cond: value: if cond then value else { };
  mkMerge = builtins.foldl' recursiveMerge { };
  mkDefault = value: value;
  types = {
    bool = type "bool" { };
    str = type "str" { };
    number = type "number" { };
    package = type "package" { };
    attrs = type "attrs" { };
    ints = { unsigned = type "unsigned" { }; positive = type "positive" { }; };
    nullOr = t: type "nullOr" { inner = t; };
    listOf = t: type "listOf" { inner = t; };
    attrsOf = t: type "attrsOf" { inner = t; };
    enum = values: type "enum" { inherit values; };
    submodule = m: type "submodule" { options = m.options; };
  };
  hm.dag.entryAfter = after: data: { inherit after data; };
}
