// Sign in by pasting a token. The API checks it (`me`) before the console
// keeps it, for this tab only.

import { errorBox, field, h, show } from '../dom.js';
import { gql } from '../graphql.js';
import { ME } from '../queries.js';
import { endNotice, startSession } from '../session.js';

export async function render(main) {
  const notice = endNotice();
  const token = h('textarea', { name: 'token', rows: 4, required: true, autocomplete: 'off', spellcheck: 'false' });
  const result = h('div', { 'aria-live': 'polite' });
  const form = h('form', {
    class: 'card narrow',
    onSubmit: async (event) => {
      event.preventDefault();
      const value = token.value.trim().replace(/^Bearer\s+/i, '');
      show(result);
      try {
        const data = await gql(ME, {}, value);
        startSession(value, data.me);
        const next = sessionStorage.getItem('dcs.after-signin') || '#/desktops';
        sessionStorage.removeItem('dcs.after-signin');
        location.hash = next === '#/signin' ? '#/desktops' : next;
      } catch (error) {
        show(result, errorBox(error));
      }
    },
  },
  h('h1', {}, 'Sign in'),
  notice ? h('p', { class: 'notice', role: 'status' }, notice) : null,
  field('Your token', token, 'The JWT your workshop organiser gave you. It stays in this browser tab only.'),
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
  result);
  show(main, form);
  token.focus();
}
