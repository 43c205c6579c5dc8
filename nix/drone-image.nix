# packages.<system>.drone-image: the drone image built with dockerTools, to the same contract as
# the Containerfile image (templates/image/CONTRACT.md; tests/unit/test_nix.py compares the two).
# Both run the same init, templates/image/devbox-drone-init.
#
#   nix build .#drone-image && podman load < result
#
# gives localhost/devbox-drone:latest, devbox's default image. Layers: one per store path up to
# maxLayers, so drones built from the same nixpkgs share most of them.
{ dockerTools, buildEnv, bashInteractive, coreutils, findutils, gnugrep, gnused, git, curl, gh, openssh
, tailscale, syncthing, sudo, iproute2, procps, less, hostname, tmux, mosh
, name ? "localhost/devbox-drone", tag ? "latest", maxLayers ? 100 }:
let
  # Every command of the contract and where it comes from (the tests parse this table).
  commands = {
    sh = "${bashInteractive}/bin/sh";
    bash = "${bashInteractive}/bin/bash";
    env = "${coreutils}/bin/env";
    git = "${git}/bin/git";
    curl = "${curl}/bin/curl";
    gh = "${gh}/bin/gh";
    ssh = "${openssh}/bin/ssh";
    sshd = "${openssh}/bin/sshd";
    ssh-keygen = "${openssh}/bin/ssh-keygen";
    tailscale = "${tailscale}/bin/tailscale";
    tailscaled = "${tailscale}/bin/tailscaled";
    syncthing = "${syncthing}/bin/syncthing";
    sudo = "/usr/bin/sudo"; # a setuid copy, made below
    find = "${findutils}/bin/find";
    grep = "${gnugrep}/bin/grep";
    wc = "${coreutils}/bin/wc";
    head = "${coreutils}/bin/head";
    tail = "${coreutils}/bin/tail";
    tr = "${coreutils}/bin/tr";
    mv = "${coreutils}/bin/mv";
    rm = "${coreutils}/bin/rm";
    sleep = "${coreutils}/bin/sleep";
    sed = "${gnused}/bin/sed";
    id = "${coreutils}/bin/id";
    mkdir = "${coreutils}/bin/mkdir";
    chmod = "${coreutils}/bin/chmod";
    cat = "${coreutils}/bin/cat";
    devbox-drone-init = "/usr/local/bin/devbox-drone-init";
    tmux = "${tmux}/bin/tmux";
    mosh-server = "${mosh}/bin/mosh-server";
  };
  # Every path of the contract, and /var/empty for sshd; the build fails when one is missing.
  paths = [
    "/bin/sh"
    "/usr/bin/env"
    "/etc/passwd"
    "/etc/group"
    "/etc/sudoers"
    "/etc/ssl/certs/ca-certificates.crt"
    "/tmp"
    "/usr/local/bin"
    "/usr/local/lib"
    "/run"
    "/usr/local/bin/devbox-drone-init"
    "/var/empty"
  ];
  entrypoint = "/usr/local/bin/devbox-drone-init";
  port = 2222;

  tools = buildEnv {
    name = "devbox-drone-tools";
    paths = [ bashInteractive coreutils findutils gnugrep gnused git curl gh openssh tailscale syncthing iproute2 procps less hostname tmux mosh ];
    pathsToLink = [ "/bin" "/share" "/libexec" ];
  };
in
(dockerTools.buildLayeredImage {
  inherit name tag maxLayers;
  contents = [ tools dockerTools.binSh dockerTools.usrBinEnv dockerTools.caCertificates ];
  fakeRootCommands = ''
    mkdir -p etc tmp run usr/bin usr/local/bin usr/local/lib var/empty
    chmod 1777 tmp
    chmod 0755 var/empty
    # Regular files: Podman adds the keep-id user to them. No uid 1000 user here, or keep-id would
    # take that user's name and home instead of the host user's.
    rm -f etc/passwd etc/group etc/shadow etc/sudoers
    printf '%s\n' 'root:x:0:0:root:/root:/bin/bash' 'sshd:x:74:74:sshd privilege separation:/var/empty:/bin/sh' \
      'nobody:x:65534:65534:nobody:/nonexistent:/bin/sh' > etc/passwd
    printf '%s\n' 'root:x:0:' 'sshd:x:74:' 'nogroup:x:65534:' > etc/group
    printf '%s\n' 'root:!:1::::::' 'sshd:!:1::::::' 'nobody:!:1::::::' > etc/shadow
    chmod 0644 etc/passwd etc/group
    chmod 0640 etc/shadow
    # The drone is a user namespace whose root is the host user: sudo without a password.
    printf '%s\n' 'Defaults !lecture' 'ALL ALL=(ALL:ALL) NOPASSWD: ALL' > etc/sudoers
    chmod 0440 etc/sudoers
    install -o 0 -g 0 -m 4755 ${sudo}/bin/sudo usr/bin/sudo
    install -m 0755 ${../templates/image/devbox-drone-init} usr/local/bin/devbox-drone-init
    # Login shells source /etc/profile.d (the proxy to the tailnet, as in the Containerfile image).
    mkdir -p etc/profile.d
    install -m 0644 ${../templates/image/devbox-drone.sh} etc/profile.d/devbox-drone.sh
    printf '%s\n' 'for f in /etc/profile.d/*.sh; do [ -r "$f" ] && . "$f"; done' 'unset f' > etc/profile
    for p in ${builtins.concatStringsSep " " paths}; do
      [ -e ".$p" ] || { echo "drone image: $p is missing" >&2; exit 1; }
    done
    for c in ${builtins.concatStringsSep " " (builtins.attrNames commands)}; do
      [ -e "usr/local/bin/$c" ] || [ -e "usr/bin/$c" ] || [ -e "bin/$c" ] || { echo "drone image: command $c is missing" >&2; exit 1; }
    done
  '';
  config = {
    Cmd = [ entrypoint ];
    Env = [
      "PATH=/usr/local/bin:/usr/bin:/bin"
      "LANG=C.UTF-8"
      "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
    ];
    ExposedPorts = { "${toString port}/tcp" = { }; };
    Labels = { "io.devbox.image" = "1"; "io.devbox.image-contract" = "templates/image/CONTRACT.md"; };
  };
}) // {
  # For tests and tools: what this image provides, as templates/image/CONTRACT.md lists it.
  contract = { inherit commands paths entrypoint port; };
}
