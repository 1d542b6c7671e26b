// Accessible tabs (WAI-ARIA tabs pattern, manual activation): arrow keys, Home and End move
// focus between tabs; Enter, Space or a click shows the panel. The URL hash remembers it.

/**
 * Wire the tablist. `onShow[name]` is called each time the tab `tab-<name>` is shown.
 */
export function initTabs(tablist, onShow = {}) {
  const tabs = [...tablist.querySelectorAll('[role="tab"]')];
  const nameOf = (tab) => tab.id.replace(/^tab-/, "");

  function select(tab, { focus = false } = {}) {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
    }
    if (focus) tab.focus();
    history.replaceState(null, "", `#${nameOf(tab)}`);
    onShow[nameOf(tab)]?.();
  }

  tablist.addEventListener("click", (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (tab) select(tab);
  });

  tablist.addEventListener("keydown", (event) => {
    const index = tabs.indexOf(document.activeElement);
    if (index < 0) return;
    const moves = {
      ArrowRight: index + 1,
      ArrowLeft: index - 1,
      Home: 0,
      End: tabs.length - 1,
    };
    if (event.key in moves) {
      event.preventDefault();
      tabs[(moves[event.key] + tabs.length) % tabs.length].focus();
    }
  });

  const fromHash = tabs.find((tab) => `#${nameOf(tab)}` === location.hash);
  select(fromHash || tabs[0]);
}
