#!/bin/sh
# Add Omnidesk to this user's application menu: the desktop entry and its icons.
#
#   sh install-desktop-entry.sh [EXECUTABLE]
#
# EXECUTABLE: the omnidesk program the menu starts (default: the one beside this script,
# as in the built app's folder). Files go under $XDG_DATA_HOME (default ~/.local/share):
# applications/omnidesk.desktop and icons/hicolor/SIZE/apps/omnidesk.png. Run it again
# after moving the app.
set -eu

here="$(cd "$(dirname "$0")" && pwd)"
exe="${1:-$here/omnidesk}"
case "$exe" in /*) ;; *) exe="$(pwd)/$exe" ;; esac
if [ ! -x "$exe" ]; then
    echo "install-desktop-entry.sh: $exe is not an executable program; pass the path to omnidesk" >&2
    exit 1
fi
case "$exe" in
    *[\\\"\`\$%]*)
        echo "install-desktop-entry.sh: a menu entry cannot start $exe: move the app to a folder whose" \
            'path has none of \ " ` $ %' >&2
        exit 1 ;;
esac
# The icons sit beside this script in the built app, and in assets/icons in the source tree.
icons="$here/icons"
[ -d "$icons" ] || icons="$here/../../assets/icons"
data="${XDG_DATA_HOME:-$HOME/.local/share}"

for size in 16 24 32 48 64 128 256 512; do
    mkdir -p "$data/icons/hicolor/${size}x${size}/apps"
    cp "$icons/omnidesk-$size.png" "$data/icons/hicolor/${size}x${size}/apps/omnidesk.png"
done
mkdir -p "$data/icons/hicolor/scalable/apps" "$data/applications"
cp "$icons/omnidesk.svg" "$data/icons/hicolor/scalable/apps/omnidesk.svg"
while IFS= read -r line; do
    case "$line" in
        Exec=*) printf 'Exec="%s"\n' "$exe" ;;
        *) printf '%s\n' "$line" ;;
    esac
done < "$here/omnidesk.desktop" > "$data/applications/omnidesk.desktop"

# Menus and icon caches refresh by themselves on most desktops; these speed it up where present.
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$data/applications" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$data/icons/hicolor" || true
echo "Omnidesk is in the application menu: $data/applications/omnidesk.desktop starts $exe"
